"""A vendor's onboarding lifecycle: proposed (registered by an admin), activated by a head-office
approver who did not propose it, suspended and resumed, offboarded.

Only a right on an active vendor may be admitted or resumed (quanyi/campaigns/rights.py). A
vendor is offboarded once no admitted or suspended right names it. While a vendor is suspended
its fulfilments are not attempted: each waits, parked without spending an attempt, and is tried
again once the vendor is active (quanyi/fulfilment/fulfiller.py); claims of its rights go on
being granted (suspend the right to stop those). Redemption callbacks and statements of a
vendor in any state are taken as before: they are about grants it already issued.
"""

from __future__ import annotations

from quanyi.access.staff import Staff, audit
from quanyi.core.errors import Forbidden, InvalidTransition, NotFound, VendorInUse
from quanyi.vendors import queries
from quanyi.vendors.registry import Vendor, VendorRegistry

VENDOR_STATES = ("proposed", "active", "suspended", "offboarded")
# action: (states it may start from, state it leads to); every move a head-office approver's.
VENDOR_ACTIONS: dict[str, tuple[frozenset[str], str]] = {
    "activate": (frozenset({"proposed"}), "active"),
    "suspend": (frozenset({"active"}), "suspended"),
    "resume": (frozenset({"suspended"}), "active"),
    "offboard": (frozenset({"proposed", "active", "suspended"}), "offboarded"),
}


class VendorLifecycle(VendorRegistry):
    async def transition(self, staff: Staff, vendor_id: str, action: str) -> Vendor:
        sources, target = VENDOR_ACTIONS[action]
        staff.require_role("approver")
        staff.require_head_office()
        async with self._pool.acquire() as conn, conn.transaction():
            # The lock a right's admission waits for (campaigns right_vendor_state).
            row = await conn.fetchrow(queries.lock_vendor, vendor_id)
            if row is None:
                raise NotFound(f"no vendor {vendor_id}")
            state = row["state"]
            if state not in sources:
                raise InvalidTransition(f"cannot {action} a vendor that is {state}", state=state)
            if action == "activate" and staff.username == row["proposed_by"]:
                raise Forbidden("maker-checker: whoever proposed a vendor may not activate it")
            if action == "offboard":
                held = await conn.fetch(queries.rights_held_by_vendor, vendor_id)
                if held:
                    raise VendorInUse(
                        f"vendor {vendor_id} still fulfils admitted or suspended rights;"
                        " retire them first",
                        rights=[{"right_id": r["id"], "state": r["state"]} for r in held],
                    )
            vendor = Vendor.from_row(
                await conn.fetchrow(queries.set_vendor_state, vendor_id, target, staff.username)
            )
            await audit(
                conn,
                staff,
                f"vendor.{action}",
                f"vendor:{vendor_id}",
                {"from": state, "to": target},
            )
        return vendor
