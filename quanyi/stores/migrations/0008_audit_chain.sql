-- The audit log becomes a hash chain: each row's hash covers the previous row's hash and the
-- row's own fields, so `quanyi audit verify` names the first row altered, inserted or deleted.
-- Rows are chained by triggers as their transaction commits, whatever wrote them; UPDATE,
-- DELETE and TRUNCATE are refused.
-- The canonical text and the hash are recomputed in Python by quanyi/access/audit.py: change
-- one, change the other (and the version word 'audit-v1').

LOCK TABLE audit_log IN EXCLUSIVE MODE;  -- no insert slips in unchained while this runs

ALTER TABLE audit_log ADD COLUMN prev_hash bytea, ADD COLUMN hash bytea;

-- The end of the chain: the last row's id and hash. Its row lock, taken by a committing
-- transaction that wrote audit rows and held to the end of its commit, puts the rows of every
-- transaction in commit order; one that rolls back never touches the head, so the next row
-- always chains onto a committed one.
CREATE TABLE audit_chain_head (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    last_id  bigint NOT NULL,
    hash     bytea NOT NULL
);

-- What a row's hash covers besides the previous hash: every field, each length-prefixed so
-- no two rows give the same text; the time in UTC to the microsecond, whatever TimeZone says.
CREATE FUNCTION audit_row_text(
    id bigint, at timestamptz, actor text, branch text, action text, target text, detail jsonb
) RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT concat_ws(
        E'\n',
        'audit-v1',
        id::text,
        to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        length(actor) || ':' || actor,
        length(branch) || ':' || branch,
        length(action) || ':' || action,
        length(target) || ':' || target,
        length(detail::text) || ':' || detail::text
    )
$$;

-- Existing rows, chained in id order from the genesis hash (32 zero bytes).
DO $$
DECLARE
    r record;
    h bytea := decode(repeat('00', 32), 'hex');
    last bigint := 0;
BEGIN
    FOR r IN SELECT * FROM audit_log ORDER BY id LOOP
        UPDATE audit_log
        SET prev_hash = h,
            hash = sha256(h || convert_to(
                audit_row_text(r.id, r.at, r.actor, r.branch, r.action, r.target, r.detail),
                'UTF8'))
        WHERE id = r.id
        RETURNING audit_log.hash INTO h;
        last := r.id;
    END LOOP;
    INSERT INTO audit_chain_head (last_id, hash) VALUES (last, h);
END
$$;

-- A row is chained when its transaction commits, not when it is written: the chain head is
-- then locked only for the commit itself. Locked at the insert, it would be held through the
-- rest of the transaction, and a transaction that audits and then waits for a row another
-- holds (approving a campaign shares its rights) would deadlock with that other one auditing.
-- Until then a row has a pending id (negative, from the old sequence) and no hash; at commit
-- it takes the id after the head's (chain order, no gaps from here on) and its hash.
ALTER TABLE audit_log ALTER COLUMN id DROP DEFAULT;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_sealed CHECK (
    (id > 0 AND prev_hash IS NOT NULL AND hash IS NOT NULL)
    OR (id < 0 AND prev_hash IS NULL AND hash IS NULL)
);

-- SECURITY DEFINER, here and below: the application's role inserts audit rows but has no
-- right on the sequence, on the head, nor to update a row.
CREATE FUNCTION audit_log_pending() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
BEGIN
    NEW.id := -nextval('audit_log_id_seq');
    NEW.prev_hash := NULL;
    NEW.hash := NULL;
    RETURN NEW;
END
$$;

CREATE TRIGGER audit_log_pending BEFORE INSERT ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_pending();

CREATE FUNCTION audit_log_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, public
AS $$
DECLARE
    head audit_chain_head%ROWTYPE;
    sealed_id bigint;
    sealed bytea;
BEGIN
    -- Held to the end of the commit: the next committing transaction waits here, then reads
    -- the head this one left. A transaction that rolls back never gets here.
    SELECT * INTO head FROM audit_chain_head WHERE only_row FOR UPDATE;
    IF NOT FOUND THEN
        -- Emptied with the table (a superuser's TRUNCATE), or removed: start from the genesis
        -- hash after the last id there is; rows left behind then fail `quanyi audit verify`.
        INSERT INTO audit_chain_head (last_id, hash)
        SELECT coalesce(max(id) FILTER (WHERE id > 0), 0), decode(repeat('00', 32), 'hex')
        FROM audit_log
        ON CONFLICT (only_row) DO NOTHING;
        SELECT * INTO STRICT head FROM audit_chain_head WHERE only_row FOR UPDATE;
    END IF;
    sealed_id := head.last_id + 1;
    sealed := sha256(head.hash || convert_to(
        audit_row_text(sealed_id, NEW.at, NEW.actor, NEW.branch, NEW.action, NEW.target,
                       NEW.detail),
        'UTF8'));
    UPDATE audit_log SET id = sealed_id, prev_hash = head.hash, hash = sealed WHERE id = NEW.id;
    UPDATE audit_chain_head SET last_id = sealed_id, hash = sealed WHERE only_row;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER audit_log_chain AFTER INSERT ON audit_log
DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW EXECUTE FUNCTION audit_log_chain();

-- Refused even when no row matches (statement triggers); the one update let through is the
-- chain trigger sealing a pending row (trigger depth 2 there, 1 for a statement sent). A
-- superuser can still get past them (session_replication_role = replica, or disabling a
-- trigger as the owner): that is what `quanyi audit verify` is for.
CREATE FUNCTION audit_log_refuse() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND pg_trigger_depth() > 1 THEN
        IF TG_LEVEL = 'STATEMENT' THEN
            RETURN NULL;
        END IF;
        IF OLD.hash IS NULL THEN
            RETURN NEW;
        END IF;
    END IF;
    RAISE EXCEPTION 'the audit log is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse();
CREATE TRIGGER audit_log_sealed_once BEFORE UPDATE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_refuse();

-- The head moves only from the chain trigger (trigger depth 2 there, 1 for a direct statement).
CREATE FUNCTION audit_chain_head_guard() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'the audit chain head moves only when an audit row is inserted'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER audit_chain_head_guard BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_chain_head
FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_head_guard();

REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM PUBLIC;
REVOKE ALL ON audit_chain_head FROM PUBLIC;

-- The admin API's filters: by time, by actor, by action, newest first.
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_actor ON audit_log (actor, id);
CREATE INDEX audit_log_action ON audit_log (action text_pattern_ops, id);
CREATE INDEX audit_log_target_prefix ON audit_log (target text_pattern_ops, id);
