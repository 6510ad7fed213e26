-- Channel secrets are kept sealed (AES-256-GCM under the key QUANYI_SECRETS_KEY names, see
-- access/secret_box.py), never in clear. `secret` now only holds what an older version wrote:
-- the first API process to start with a key seals each such row into `secret_sealed` and
-- clears `secret` (access/channels.py seal_plaintext_secrets), so upgrading needs no extra step.
ALTER TABLE channels ADD COLUMN secret_sealed text;
ALTER TABLE channels ALTER COLUMN secret DROP NOT NULL;
ALTER TABLE channels ADD CONSTRAINT channels_secret_kept
    CHECK (secret IS NOT NULL OR secret_sealed IS NOT NULL);
