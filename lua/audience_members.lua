-- uses: grant
-- audience_members: which of some customers are members of an audience's current version.
--
-- KEYS[1] - the audience pointer, `PREFIX:aud:{a:ID}` (as audience_has.lua)
-- ARGV    - the customer ids
--
-- For the scripts of a Redis Cluster's shards, which cannot reach the audience's slot: the
-- membership of a batch's customers is read here, just before, in one call per audience
-- (quanyi/issuance/memberships.py). The pointer and the member hashes are read together, so an
-- import flipping the pointer is never seen half-way.
--
-- Returns a string of "1" (a member) and "0", one character per customer, in order.

local out, pointers = {}, {}
for i, customer in ipairs(ARGV) do
  out[i] = is_member(KEYS[1], customer, pointers) and '1' or '0'
end
return table.concat(out)
