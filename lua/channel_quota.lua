-- uses: grant
-- channel_quota.lua: move a live reward's channel quotas (README "Channel quotas"), checked
-- against what each channel granted and written in one atomic step, so no claim lands between
-- the check and the write. The checks and writes are grant.lua's quota_revision_refusal and
-- write_quotas, which a campaign revision's own script can call in its atomic step instead.
--
-- KEYS[1]  campaign hash {c:ID}: r:<reward>:granted|qsum|qfg, q:<channel>, qg:<channel>
-- KEYS[2]  store-ready marker: without it the counters may be lost, and nothing is checked
--
-- ARGV[1]  reward id
-- ARGV[2]  the reward's stock after the change
-- ARGV[3]  the new quotas, JSON {"<channel>": n}
--
-- Returns {outcome, channel, figure}:
--   {"moved", "", 0}
--   {"store_not_ready", "", 0}   {"reward_not_found", "", 0}
--   or a refusal of grant.lua quota_revision_refusal (nothing written)

if redis.call('EXISTS', KEYS[2]) == 0 then return {'store_not_ready', '', 0} end
local campaign, reward, stock = KEYS[1], ARGV[1], tonumber(ARGV[2])
if redis.call('HEXISTS', campaign, 'r:' .. reward .. ':stock') == 0 then
  return {'reward_not_found', '', 0}
end
local quotas = cjson.decode(ARGV[3])
local refused = quota_revision_refusal(campaign, reward, stock, quotas)
if refused then return refused end
write_quotas(campaign, reward, quotas)
return {'moved', '', 0}
