"""The staff API of operations: each vendor's circuit as a real fulfilment worker publishes it,
the dead letters and their redrive, code-pool levels, and staff reads of grants (by id and by
customer) within the branch subtree."""

from __future__ import annotations

import asyncio
from typing import Any

from quanyi.vendors.operations import import_codes
from tests.support.factories import campaign_of_branch, grant_many, setup_vendor
from tests.support.vendors import sim_config
from tests.support.waiting import all_in, running, until

# vendor health


async def health_of(api: Any, vendor_id: str, user: str = "operator") -> dict[str, Any]:
    status, body = await api.admin(user, "GET", f"/admin/v1/vendors/{vendor_id}/health")
    assert status == 200, body
    return body


async def test_a_workers_open_circuit_is_read_through_the_api_and_closes_again(
    api, redis, keys, start_sim, key_pairs, our_key_file, worker_factory
):
    sim = await start_sim(outage=True)
    await setup_vendor(
        api,
        key_pairs,
        our_key_file,
        sim,
        vendor_id="down",
        right_id="lounge",
        max_in_flight=1,
        retry={"max_attempts": 100, "backoff_base_ms": 10, "backoff_max_ms": 50},
    )
    # Before any worker has seen the vendor, nothing is known of its circuit.
    assert (await health_of(api, "down"))["state"] == "unknown"
    grant_ids = await grant_many(api, "c1", 10)
    worker = worker_factory(breaker_threshold=3, breaker_reset_s=2)
    async with running(worker):
        seen: dict[str, Any] = {}

        async def opened() -> bool:
            seen.update(await health_of(api, "down"))
            return seen["state"] == "open"

        await until(opened, timeout=15, what="the circuit open, read through the API")
        assert seen["failures"] >= 3
        assert seen["worker"] == worker.consumer
        assert seen["opened_at"] is not None and seen["updated_at"] >= seen["opened_at"]
        # It ages out unless the worker refreshes it.
        assert 0 < await redis.ttl(keys.vendor_health("down")) <= 30
        status, listed = await api.admin("approver", "GET", "/admin/v1/vendor-health")
        assert status == 200, listed
        assert [v["vendor_id"] for v in listed["vendors"]] == ["down"]
        assert listed["vendors"][0]["state"] in ("open", "half_open")

        # The vendor is back: a probe gets through, the circuit closes and says so.
        await sim_config(sim, outage=False)
        await until(all_in(api, grant_ids, "fulfilled"), timeout=30, what="recovery")

        async def closed() -> bool:
            return (await health_of(api, "down"))["state"] == "closed"

        await until(closed, timeout=10, what="the circuit closed, read through the API")
    assert (await health_of(api, "down"))["failures"] == 0


async def test_a_live_worker_keeps_the_circuit_current_and_a_dead_ones_ages_out(
    api, redis, keys, start_sim, key_pairs, our_key_file, worker_factory
):
    sim = await start_sim(outage=True)
    await setup_vendor(
        api,
        key_pairs,
        our_key_file,
        sim,
        vendor_id="down",
        right_id="lounge",
        max_in_flight=1,
        retry={"max_attempts": 100, "backoff_base_ms": 10, "backoff_max_ms": 50},
    )
    await grant_many(api, "c1", 5)
    # Vendors timer 1 s: the hash lives 5 s unless refreshed.
    worker = worker_factory(breaker_threshold=3, breaker_reset_s=60, vendors_every_s=1)
    async with running(worker):

        async def opened() -> bool:
            return (await health_of(api, "down"))["state"] == "open"

        await until(opened, timeout=15, what="the circuit open")
        first = await health_of(api, "down")
        await asyncio.sleep(6)
        later = await health_of(api, "down")
        assert later["state"] == "open"
        assert later["opened_at"] == first["opened_at"]
        assert later["updated_at"] > first["updated_at"]

    async def aged_out() -> bool:
        return (await health_of(api, "down"))["state"] == "unknown"

    await until(aged_out, timeout=10, what="the stopped worker's circuit aged out")
    assert await redis.exists(keys.vendor_health("down")) == 0


async def test_vendor_health_is_head_offices_and_names_known_vendors_only(api):
    status, body = await api.admin("operator", "GET", "/admin/v1/vendors/nobody/health")
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, body = await api.admin("sz-marketer", "GET", "/admin/v1/vendor-health")
    assert (status, body["error"]["code"]) == (403, "forbidden")


# dead letters


async def test_dead_letters_are_listed_and_redriven_through_the_api(
    api, pool, start_sim, key_pairs, our_key_file, worker_factory
):
    sim = await start_sim(error_rate=1)
    await setup_vendor(
        api,
        key_pairs,
        our_key_file,
        sim,
        vendor_id="broken",
        right_id="lounge",
        retry={"max_attempts": 2, "backoff_base_ms": 10, "backoff_max_ms": 20},
    )
    status, grant = await api.claim(request_id="q1", campaign_id="c1", customer_id="cust-1")
    assert status == 201, grant
    grant_id = grant["grant_id"]

    async with running(worker_factory()):
        await until(all_in(api, [grant_id], "failed"), timeout=15, what="the grant failed")
        # A later dead letter of another vendor: a filtered page reads past the first one.
        await setup_vendor(
            api,
            key_pairs,
            our_key_file,
            await start_sim(error_rate=1),
            vendor_id="other",
            right_id="gym",
            campaign_id="c2",
            retry={"max_attempts": 1},
        )
        status, later = await api.claim(request_id="q2", campaign_id="c2", customer_id="cust-2")
        assert status == 201, later
        await until(all_in(api, [later["grant_id"]], "failed"), timeout=15, what="c2 failed")
        status, listed = await api.admin(
            "operator", "GET", "/admin/v1/dead-letters?vendor_id=other&limit=1"
        )
        assert [d["grant_id"] for d in listed["dead_letters"]] == [later["grant_id"]]
        status, listed = await api.admin("operator", "GET", "/admin/v1/dead-letters?limit=1")
        assert [d["grant_id"] for d in listed["dead_letters"]] == [grant_id]
        status, listed = await api.admin(
            "operator", "GET", "/admin/v1/dead-letters?vendor_id=broken"
        )
        assert status == 200, listed
        [dead] = listed["dead_letters"]
        assert (dead["grant_id"], dead["vendor_id"], dead["attempts"]) == (grant_id, "broken", 2)
        assert "HTTP 500" in dead["error"]
        status, other = await api.admin("operator", "GET", "/admin/v1/dead-letters?vendor_id=x")
        assert (status, other) == (200, {"dead_letters": []})
        status, refused = await api.admin("marketer", "GET", "/admin/v1/dead-letters")
        assert (status, refused["error"]["code"]) == (403, "forbidden")

        await sim_config(sim, error_rate=0)
        status, done = await api.admin(
            "operator",
            "POST",
            "/admin/v1/dead-letters/redrive",
            {"grant_ids": [grant_id, "01NOSUCHGRANT"]},
        )
        assert status == 200, done
        assert done == {
            "results": [
                {"grant_id": grant_id, "outcome": "redriven"},
                {"grant_id": "01NOSUCHGRANT", "outcome": "not dead-lettered"},
            ],
            "redriven": 1,
        }
        await until(all_in(api, [grant_id], "fulfilled"), timeout=15, what="the redriven grant")
        status, listed = await api.admin("operator", "GET", "/admin/v1/dead-letters")
        assert [d["grant_id"] for d in listed["dead_letters"]] == [later["grant_id"]]

    audited = await pool.fetch("SELECT actor, target FROM audit_log WHERE action = 'grant.redrive'")
    assert [(r["actor"], r["target"]) for r in audited] == [("operator", f"grant:{grant_id}")]


async def test_bad_dead_letter_input_is_a_typed_400(api):
    for body in ({}, {"grant_ids": []}, {"grant_ids": "x"}, {"grant_ids": [1]}):
        status, reply = await api.admin("operator", "POST", "/admin/v1/dead-letters/redrive", body)
        assert (status, reply["error"]["code"]) == (400, "invalid_request"), body
    for query in ("limit=0", "limit=abc", "vendor_id=a%20b"):
        status, reply = await api.admin("operator", "GET", f"/admin/v1/dead-letters?{query}")
        assert (status, reply["error"]["code"]) == (400, "invalid_request"), query


# code pools


async def test_code_pool_levels_show_codes_left_and_what_live_campaigns_may_grant(
    api, pool, redis, keys, key_pairs, our_key_file, tmp_path
):
    await setup_vendor(
        api,
        key_pairs,
        our_key_file,
        None,
        vendor_id="codes",
        right_id="movie",
        stock=150,
        adapter="codepool",
    )
    await api.create_right("spare", vendor_id="codes")
    csv_file = tmp_path / "codes.csv"
    csv_file.write_text("code\n" + "\n".join(f"MOVIE-{i:04d}" for i in range(100)) + "\n")
    await import_codes(pool, redis, keys, "codes", "movie", csv_file)

    path = "/admin/v1/vendors/codes/code-pools"
    status, levels = await api.admin("operator", "GET", path)
    assert status == 200, levels
    assert levels == {
        "vendor_id": "codes",
        "pools": [
            {"right_id": "movie", "codes": 100, "demand": 150, "low": True},
            {"right_id": "spare", "codes": 0, "demand": 0, "low": False},
        ],
    }
    await grant_many(api, "c1", 60)  # no worker: the codes stay, the demand falls
    status, levels = await api.admin("approver", "GET", path)
    assert levels["pools"][0] == {"right_id": "movie", "codes": 100, "demand": 90, "low": False}
    status, refused = await api.admin("sz-marketer", "GET", path)
    assert (status, refused["error"]["code"]) == (403, "forbidden")


async def test_a_vendor_without_codes_has_no_code_pools(api, sim):
    status, reply = await api.admin("operator", "GET", "/admin/v1/vendors/sim/code-pools")
    assert (status, reply["error"]["code"]) == (400, "invalid_request")


# staff grant reads


async def branch_campaigns(api: Any) -> dict[str, str]:
    """Campaign `hq` of head office and `sz` of branch SZ, each with a grant for cust-1; the
    grant id of each."""
    await api.create_right("coffee")
    grants = {}
    for campaign_id, branch in (("hq", "HQ"), ("sz", "SZ")):
        body = campaign_of_branch(api, campaign_id, branch)
        status, made = await api.admin("marketer", "POST", "/admin/v1/campaigns", body)
        assert status == 201, made
        for user, action in (("marketer", "submit"), ("approver", "approve")):
            path = f"/admin/v1/campaigns/{campaign_id}/{action}"
            status, done = await api.admin(user, "POST", path)
            assert status == 200, done
        api.clock.advance(1)  # grant ids sort by the moment they were made
        status, grant = await api.claim(
            request_id=f"q-{campaign_id}", campaign_id=campaign_id, customer_id="cust-1"
        )
        assert status == 201, grant
        grants[campaign_id] = grant["grant_id"]
    return grants


async def test_staff_look_grants_up_by_id_and_by_customer_within_their_subtree(api):
    grants = await branch_campaigns(api)
    status, seen = await api.admin("marketer", "GET", f"/admin/v1/grants/{grants['hq']}")
    assert status == 200, seen
    assert (seen["grant_id"], seen["branch"], seen["status"]) == (grants["hq"], "HQ", "fulfilled")
    assert [e["event"] for e in seen["timeline"]] == ["granted", "fulfilled"]
    assert "unit_cost" not in seen

    status, listed = await api.admin("auditor", "GET", "/admin/v1/grants?customer_id=cust-1")
    assert status == 200, listed
    # Newest first.
    assert [g["grant_id"] for g in listed["grants"]] == [grants["sz"], grants["hq"]]
    status, listed = await api.admin(
        "marketer", "GET", "/admin/v1/grants?customer_id=cust-1&limit=1"
    )
    assert [g["grant_id"] for g in listed["grants"]] == [grants["sz"]]

    # Branch staff see their own branch's grant, and nothing of head office's.
    status, seen = await api.admin("sz-marketer", "GET", f"/admin/v1/grants/{grants['sz']}")
    assert (status, seen["branch"]) == (200, "SZ")
    status, listed = await api.admin("sz-marketer", "GET", "/admin/v1/grants?customer_id=cust-1")
    assert [(g["grant_id"], g["branch"]) for g in listed["grants"]] == [(grants["sz"], "SZ")]
    status, hidden = await api.admin("sz-marketer", "GET", f"/admin/v1/grants/{grants['hq']}")
    unknown = "01JZZZZZZZZZZZZZZZZZZZZZZZ"
    status_unknown, missing = await api.admin("sz-marketer", "GET", f"/admin/v1/grants/{unknown}")
    assert (status, hidden["error"]["code"]) == (404, "grant_not_found")
    assert (status_unknown, missing["error"]["code"]) == (404, "grant_not_found")
    # The same answer as an id no grant has: nothing says it exists elsewhere.
    assert hidden["error"]["message"].replace(grants["hq"], "ID") == missing["error"][
        "message"
    ].replace(unknown, "ID")

    # Operators handle vendors, not money.
    status, refused = await api.admin("operator", "GET", f"/admin/v1/grants/{grants['hq']}")
    assert (status, refused["error"]["code"]) == (403, "forbidden")

    # A revoke shows in the lookup at once.
    status, _ = await api.admin("marketer", "POST", f"/admin/v1/grants/{grants['hq']}/revoke", {})
    assert status == 200
    status, seen = await api.admin("marketer", "GET", f"/admin/v1/grants/{grants['hq']}")
    assert seen["status"] == "revoked"
    status, listed = await api.admin("marketer", "GET", "/admin/v1/grants?customer_id=cust-1")
    assert {g["grant_id"]: g["status"] for g in listed["grants"]}[grants["hq"]] == "revoked"


async def test_bad_grant_lookups_are_a_typed_400(api):
    for path in (
        "/admin/v1/grants",
        "/admin/v1/grants?customer_id=",
        "/admin/v1/grants?customer_id=4111%201111%201111%201111",
        "/admin/v1/grants?customer_id=cust-1&limit=0",
        "/admin/v1/grants?customer_id=cust-1&limit=501",
        "/admin/v1/grants?customer_id=cust-1&limit=ten",
        "/admin/v1/grants/not-a-grant-id",
    ):
        status, reply = await api.admin("marketer", "GET", path)
        assert (status, reply["error"]["code"]) == (400, "invalid_request"), path
        assert "4111" not in str(reply)
