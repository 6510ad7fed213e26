-- uses: grant
-- audience_has: whether a customer is a member of an audience's current version.
--
-- KEYS[1] - the audience pointer, `PREFIX:aud:{a:ID}`, holding "VERSION:BUCKETS" (absent until
--           the first import)
-- ARGV[1] - the customer id
--
-- is_member (grant.lua, which claims share) reads it. The members of a version are in the
-- hashes `KEYS[1]:VERSION:BUCKET` (field: customer id, value "1"), BUCKET = first 8 hex digits of SHA-1(customer id) mod BUCKETS, as
-- quanyi/stores/keys.py audience_bucket_of computes it. The bucket hash shares the pointer's
-- hash tag, so it lives in the same cluster slot. Reading the pointer and the hash in one
-- script means an import that flips the pointer in between cannot be seen half-way: the
-- answer is from the old version or from the new one.
--
-- Returns 1 for a member, 0 otherwise (also when the audience has never been imported).

if is_member(KEYS[1], ARGV[1]) then return 1 end
return 0
