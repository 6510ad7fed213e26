--
-- PostgreSQL database dump
--


SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: audit_chain_head_guard(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.audit_chain_head_guard() RETURNS trigger
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


--
-- Name: audit_log_chain(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.audit_log_chain() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public'
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


--
-- Name: audit_log_pending(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.audit_log_pending() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path TO 'pg_catalog', 'public'
    AS $$
BEGIN
    NEW.id := -nextval('audit_log_id_seq');
    NEW.prev_hash := NULL;
    NEW.hash := NULL;
    RETURN NEW;
END
$$;


--
-- Name: audit_log_refuse(); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.audit_log_refuse() RETURNS trigger
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


--
-- Name: audit_row_text(bigint, timestamp with time zone, text, text, text, text, jsonb); Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.audit_row_text(id bigint, at timestamp with time zone, actor text, branch text, action text, target text, detail jsonb) RETURNS text
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


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: audiences; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.audiences (
    id text NOT NULL,
    name text NOT NULL,
    branch text NOT NULL,
    version integer DEFAULT 0 NOT NULL,
    members bigint DEFAULT 0 NOT NULL,
    imported_at timestamp with time zone,
    imported_by text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    created_by text NOT NULL
);


--
-- Name: audit_chain_head; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.audit_chain_head (
    only_row boolean DEFAULT true NOT NULL,
    last_id bigint NOT NULL,
    hash bytea NOT NULL,
    CONSTRAINT audit_chain_head_only_row_check CHECK (only_row)
);


--
-- Name: audit_log; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.audit_log (
    id bigint NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    actor text NOT NULL,
    branch text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    detail jsonb DEFAULT '{}'::jsonb NOT NULL,
    prev_hash bytea,
    hash bytea,
    CONSTRAINT audit_log_sealed CHECK ((((id > 0) AND (prev_hash IS NOT NULL) AND (hash IS NOT NULL)) OR ((id < 0) AND (prev_hash IS NULL) AND (hash IS NULL))))
);


--
-- Name: audit_log_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.audit_log_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: audit_log_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.audit_log_id_seq OWNED BY public.audit_log.id;


--
-- Name: branch_budgets; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.branch_budgets (
    branch_id text NOT NULL,
    period text NOT NULL,
    allocated bigint DEFAULT 0 NOT NULL,
    given bigint DEFAULT 0 NOT NULL,
    committed bigint DEFAULT 0 NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT branch_budgets_check CHECK (((given + committed) <= allocated)),
    CONSTRAINT branch_budgets_committed_check CHECK ((committed >= 0)),
    CONSTRAINT branch_budgets_given_check CHECK ((given >= 0)),
    CONSTRAINT branch_budgets_period_check CHECK ((period ~ '^[0-9]{4}$'::text))
);


--
-- Name: branches; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.branches (
    id text NOT NULL,
    name text NOT NULL,
    parent_id text,
    depth smallint NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT branches_check CHECK (((parent_id IS NULL) = (id = 'HQ'::text))),
    CONSTRAINT branches_check1 CHECK (((depth = 1) = (parent_id IS NULL))),
    CONSTRAINT branches_depth_check CHECK (((depth >= 1) AND (depth <= 4)))
);


--
-- Name: budget_movements; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.budget_movements (
    id bigint NOT NULL,
    branch_id text NOT NULL,
    period text NOT NULL,
    account text NOT NULL,
    kind text NOT NULL,
    amount bigint NOT NULL,
    counterpart text,
    campaign_id text,
    actor text NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT budget_movements_account_check CHECK ((account = ANY (ARRAY['allocated'::text, 'given'::text, 'committed'::text]))),
    CONSTRAINT budget_movements_amount_check CHECK ((amount <> 0)),
    CONSTRAINT budget_movements_check CHECK (((account = 'committed'::text) = (campaign_id IS NOT NULL))),
    CONSTRAINT budget_movements_kind_check CHECK ((kind = ANY (ARRAY['fund'::text, 'allocation'::text, 'reclaim'::text, 'reservation'::text, 'release'::text, 'revision'::text])))
);


--
-- Name: budget_movements_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.budget_movements_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: budget_movements_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.budget_movements_id_seq OWNED BY public.budget_movements.id;


--
-- Name: budget_reservations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.budget_reservations (
    campaign_id text NOT NULL,
    branch_id text NOT NULL,
    period text NOT NULL,
    amount bigint NOT NULL,
    charged bigint,
    reserved_at timestamp with time zone DEFAULT now() NOT NULL,
    released_at timestamp with time zone,
    CONSTRAINT budget_reservations_amount_check CHECK ((amount >= 0)),
    CONSTRAINT budget_reservations_check CHECK (((charged >= 0) AND (charged <= amount))),
    CONSTRAINT budget_reservations_check1 CHECK (((charged IS NULL) = (released_at IS NULL)))
);


--
-- Name: campaign_approvals; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.campaign_approvals (
    id bigint NOT NULL,
    campaign_id text NOT NULL,
    revision_id bigint,
    approver text NOT NULL,
    branch text NOT NULL,
    money bigint NOT NULL,
    needed smallint NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    superseded_at timestamp with time zone,
    CONSTRAINT campaign_approvals_needed_check CHECK (((needed >= 1) AND (needed <= 2)))
);


--
-- Name: campaign_approvals_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.campaign_approvals ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.campaign_approvals_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: campaign_results; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.campaign_results (
    campaign_id text NOT NULL,
    reward_id text NOT NULL,
    granted bigint NOT NULL,
    redeemed bigint NOT NULL,
    cost bigint NOT NULL,
    persisted bigint NOT NULL,
    ledger_lag_entries bigint NOT NULL,
    ended_at timestamp with time zone NOT NULL
);


--
-- Name: campaign_revisions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.campaign_revisions (
    id bigint NOT NULL,
    campaign_id text NOT NULL,
    changes jsonb NOT NULL,
    before jsonb NOT NULL,
    status text DEFAULT 'draft'::text NOT NULL,
    created_by text NOT NULL,
    submitted_by text,
    rejected_by text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    submitted_at timestamp with time zone,
    decided_at timestamp with time zone,
    applied_at timestamp with time zone,
    parts_to_give jsonb,
    CONSTRAINT campaign_revisions_status_check CHECK ((status = ANY (ARRAY['draft'::text, 'pending'::text, 'approved'::text, 'rejected'::text, 'applied'::text])))
);


--
-- Name: campaign_revisions_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

ALTER TABLE public.campaign_revisions ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public.campaign_revisions_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);


--
-- Name: campaigns; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.campaigns (
    id text NOT NULL,
    name text NOT NULL,
    branch text NOT NULL,
    starts_at timestamp with time zone NOT NULL,
    ends_at timestamp with time zone NOT NULL,
    channels text[] NOT NULL,
    budget bigint,
    status text DEFAULT 'draft'::text NOT NULL,
    version integer DEFAULT 1 NOT NULL,
    created_by text NOT NULL,
    submitted_by text,
    approved_by text,
    approved_at timestamp with time zone,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    return_stock_on_failure boolean DEFAULT true NOT NULL,
    makers text[] DEFAULT '{}'::text[] NOT NULL,
    phase text,
    phase_changed_at timestamp with time zone,
    customer_buckets integer,
    stock_parts integer DEFAULT 1 NOT NULL,
    CONSTRAINT campaigns_budget_check CHECK ((budget >= 0)),
    CONSTRAINT campaigns_check CHECK ((ends_at > starts_at)),
    CONSTRAINT campaigns_customer_buckets_check CHECK ((customer_buckets > 0)),
    CONSTRAINT campaigns_phase_check CHECK ((phase = ANY (ARRAY['scheduled'::text, 'running'::text, 'ended'::text]))),
    CONSTRAINT campaigns_status_check CHECK ((status = ANY (ARRAY['draft'::text, 'pending'::text, 'approved'::text, 'rejected'::text, 'paused'::text, 'ended'::text]))),
    CONSTRAINT campaigns_stock_parts_check CHECK (((stock_parts >= 1) AND (stock_parts <= 16)))
);


--
-- Name: card_events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.card_events (
    channel_id text NOT NULL,
    event_id text NOT NULL,
    type text NOT NULL,
    customer_id text NOT NULL,
    amount bigint NOT NULL,
    mcc text NOT NULL,
    occurred_at timestamp with time zone NOT NULL,
    reversal_of text,
    outcome text NOT NULL,
    counted jsonb DEFAULT '[]'::jsonb NOT NULL,
    grants jsonb DEFAULT '[]'::jsonb NOT NULL,
    received_at timestamp with time zone NOT NULL,
    outbox_id text NOT NULL
);


--
-- Name: channels; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.channels (
    id text NOT NULL,
    name text NOT NULL,
    secret text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    disabled boolean DEFAULT false NOT NULL,
    secret_sealed text,
    scopes text[] DEFAULT '{claims}'::text[] NOT NULL,
    previous_secret_sealed text,
    previous_until timestamp with time zone,
    rotated_at timestamp with time zone,
    rate_per_s double precision,
    burst integer,
    CONSTRAINT channels_previous_secret_whole CHECK (((previous_secret_sealed IS NULL) = (previous_until IS NULL))),
    CONSTRAINT channels_rate_limit_positive CHECK (((rate_per_s > (0)::double precision) AND (rate_per_s <= (100000)::double precision) AND (burst >= 1) AND (burst <= 1000000))),
    CONSTRAINT channels_rate_limit_whole CHECK (((rate_per_s IS NULL) = (burst IS NULL))),
    CONSTRAINT channels_secret_kept CHECK (((secret IS NOT NULL) OR (secret_sealed IS NOT NULL)))
);


--
-- Name: grant_events; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.grant_events (
    outbox_id text NOT NULL,
    grant_id text NOT NULL,
    event text NOT NULL,
    at timestamp with time zone NOT NULL,
    actor text NOT NULL,
    detail jsonb DEFAULT '{}'::jsonb NOT NULL,
    CONSTRAINT grant_events_event_check CHECK ((event = ANY (ARRAY['fulfilled'::text, 'failed'::text, 'redriven'::text, 'redeemed'::text, 'expired'::text, 'revoked'::text])))
);


--
-- Name: grants; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.grants (
    grant_id text NOT NULL,
    campaign_id text NOT NULL,
    reward_id text NOT NULL,
    right_id text NOT NULL,
    customer_id text NOT NULL,
    channel_id text NOT NULL,
    request_id text NOT NULL,
    unit_cost bigint NOT NULL,
    status text DEFAULT 'granted'::text NOT NULL,
    granted_at timestamp with time zone NOT NULL,
    persisted_at timestamp with time zone DEFAULT now() NOT NULL,
    outbox_id text NOT NULL,
    vendor_id text,
    code text,
    reference text,
    expires_at timestamp with time zone
);


--
-- Name: issuance_approvals; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.issuance_approvals (
    job_id text NOT NULL,
    approver text NOT NULL,
    branch text NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: issuance_jobs; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.issuance_jobs (
    id text NOT NULL,
    campaign_id text NOT NULL,
    reward_id text NOT NULL,
    audience_id text NOT NULL,
    branch text NOT NULL,
    state text DEFAULT 'pending_approval'::text NOT NULL,
    money bigint NOT NULL,
    approvals_needed integer NOT NULL,
    created_by text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    approved_by text,
    approved_at timestamp with time zone,
    buckets integer,
    total bigint DEFAULT 0 NOT NULL,
    next_bucket integer DEFAULT 0 NOT NULL,
    issued bigint DEFAULT 0 NOT NULL,
    failed bigint DEFAULT 0 NOT NULL,
    skipped jsonb DEFAULT '{}'::jsonb NOT NULL,
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT issuance_jobs_approvals_needed_check CHECK ((approvals_needed = ANY (ARRAY[1, 2]))),
    CONSTRAINT issuance_jobs_money_check CHECK ((money >= 0)),
    CONSTRAINT issuance_jobs_state_check CHECK ((state = ANY (ARRAY['pending_approval'::text, 'running'::text, 'paused'::text, 'done'::text, 'cancelled'::text])))
);


--
-- Name: issuance_lanes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.issuance_lanes (
    job_id text NOT NULL,
    lane integer NOT NULL,
    next_bucket integer NOT NULL,
    end_bucket integer NOT NULL,
    CONSTRAINT issuance_lanes_check CHECK ((end_bucket >= next_bucket)),
    CONSTRAINT issuance_lanes_lane_check CHECK ((lane >= 0))
);


--
-- Name: login_failures; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.login_failures (
    id bigint NOT NULL,
    username_digest bytea NOT NULL,
    failed_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: login_failures_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.login_failures_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: login_failures_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.login_failures_id_seq OWNED BY public.login_failures.id;


--
-- Name: notifications; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.notifications (
    id text NOT NULL,
    kind text NOT NULL,
    dedupe_key text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone DEFAULT now() NOT NULL,
    delivered_at timestamp with time zone,
    failed_at timestamp with time zone,
    last_error text
);


--
-- Name: redemptions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.redemptions (
    vendor_id text NOT NULL,
    redemption_id text NOT NULL,
    grant_id text,
    code text,
    redeemed_at timestamp with time zone,
    received_at timestamp with time zone DEFAULT now() NOT NULL,
    outcome text NOT NULL,
    reason text,
    body jsonb NOT NULL,
    CONSTRAINT redemptions_outcome_check CHECK ((outcome = ANY (ARRAY['applied'::text, 'refused'::text])))
);


--
-- Name: report_daily; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.report_daily (
    day date NOT NULL,
    campaign_id text NOT NULL,
    reward_id text NOT NULL,
    channel_id text NOT NULL,
    right_id text NOT NULL,
    vendor_id text DEFAULT ''::text NOT NULL,
    branch text NOT NULL,
    issued bigint DEFAULT 0 NOT NULL,
    fulfilled bigint DEFAULT 0 NOT NULL,
    redeemed bigint DEFAULT 0 NOT NULL,
    expired bigint DEFAULT 0 NOT NULL,
    revoked bigint DEFAULT 0 NOT NULL,
    failed bigint DEFAULT 0 NOT NULL,
    cost bigint DEFAULT 0 NOT NULL,
    face_value_issued bigint DEFAULT 0 NOT NULL,
    face_value_redeemed bigint DEFAULT 0 NOT NULL
);


--
-- Name: report_status; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.report_status (
    campaign_id text NOT NULL,
    reward_id text NOT NULL,
    status text NOT NULL,
    right_id text NOT NULL,
    vendor_id text DEFAULT ''::text NOT NULL,
    branch text NOT NULL,
    face_value bigint NOT NULL,
    grants bigint DEFAULT 0 NOT NULL
);


--
-- Name: rewards; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rewards (
    campaign_id text NOT NULL,
    id text NOT NULL,
    right_id text NOT NULL,
    unit_cost bigint NOT NULL,
    stock bigint NOT NULL,
    daily_stock bigint,
    per_customer_limit integer NOT NULL,
    per_customer_daily_limit integer,
    "position" integer NOT NULL,
    vendor_id text,
    face_value bigint NOT NULL,
    audience_id text,
    goal jsonb,
    grant_mode text DEFAULT 'claim'::text NOT NULL,
    claw_back boolean DEFAULT false NOT NULL,
    channel_quota jsonb,
    CONSTRAINT rewards_auto_has_goal CHECK (((grant_mode = 'claim'::text) OR (goal IS NOT NULL))),
    CONSTRAINT rewards_channel_quota_check CHECK (((channel_quota IS NULL) OR (jsonb_typeof(channel_quota) = 'object'::text))),
    CONSTRAINT rewards_daily_stock_check CHECK ((daily_stock > 0)),
    CONSTRAINT rewards_face_value_check CHECK ((face_value >= 0)),
    CONSTRAINT rewards_grant_mode_check CHECK ((grant_mode = ANY (ARRAY['auto'::text, 'claim'::text]))),
    CONSTRAINT rewards_per_customer_daily_limit_check CHECK ((per_customer_daily_limit > 0)),
    CONSTRAINT rewards_per_customer_limit_check CHECK ((per_customer_limit > 0)),
    CONSTRAINT rewards_stock_check CHECK ((stock >= 0))
);


--
-- Name: rights; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.rights (
    id text NOT NULL,
    name text NOT NULL,
    kind text NOT NULL,
    face_value bigint NOT NULL,
    unit_cost bigint NOT NULL,
    vendor_id text,
    created_by text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    state text DEFAULT 'proposed'::text NOT NULL,
    proposed_by text NOT NULL,
    proposed_at timestamp with time zone DEFAULT now() NOT NULL,
    proposers text[] DEFAULT '{}'::text[] NOT NULL,
    admitted_by text,
    admitted_at timestamp with time zone,
    suspended_by text,
    suspended_at timestamp with time zone,
    retired_by text,
    retired_at timestamp with time zone,
    CONSTRAINT rights_face_value_check CHECK ((face_value >= 0)),
    CONSTRAINT rights_state_check CHECK ((state = ANY (ARRAY['proposed'::text, 'admitted'::text, 'suspended'::text, 'retired'::text]))),
    CONSTRAINT rights_unit_cost_check CHECK ((unit_cost >= 0))
);


--
-- Name: schema_migrations; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: staff; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.staff (
    username text NOT NULL,
    password_hash text NOT NULL,
    role text NOT NULL,
    branch text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    disabled boolean DEFAULT false NOT NULL,
    must_change_password boolean DEFAULT false NOT NULL,
    password_changed_at timestamp with time zone,
    CONSTRAINT staff_role_check CHECK ((role = ANY (ARRAY['marketer'::text, 'approver'::text, 'admin'::text, 'auditor'::text, 'operator'::text])))
);


--
-- Name: staff_sessions; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.staff_sessions (
    token_hash bytea NOT NULL,
    username text NOT NULL,
    expires_at timestamp with time zone NOT NULL
);


--
-- Name: statements; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.statements (
    id bigint NOT NULL,
    vendor_id text NOT NULL,
    uploaded_by text NOT NULL,
    uploaded_at timestamp with time zone DEFAULT now() NOT NULL,
    rows integer NOT NULL,
    report jsonb NOT NULL,
    day date NOT NULL,
    billed_issued integer DEFAULT 0 NOT NULL,
    billed_redeemed integer DEFAULT 0 NOT NULL,
    summary jsonb DEFAULT '{}'::jsonb NOT NULL
);


--
-- Name: statements_id_seq; Type: SEQUENCE; Schema: public; Owner: -
--

CREATE SEQUENCE public.statements_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: statements_id_seq; Type: SEQUENCE OWNED BY; Schema: public; Owner: -
--

ALTER SEQUENCE public.statements_id_seq OWNED BY public.statements.id;


--
-- Name: vendor_codes; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.vendor_codes (
    vendor_id text NOT NULL,
    right_id text NOT NULL,
    code text NOT NULL,
    imported_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: vendors; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.vendors (
    id text NOT NULL,
    name text NOT NULL,
    adapter text NOT NULL,
    base_url text,
    timeout_ms integer DEFAULT 2000 NOT NULL,
    max_in_flight integer DEFAULT 64 NOT NULL,
    max_attempts integer DEFAULT 8 NOT NULL,
    backoff_base_ms integer DEFAULT 200 NOT NULL,
    backoff_max_ms integer DEFAULT 60000 NOT NULL,
    public_keys text[] DEFAULT '{}'::text[] NOT NULL,
    signing_key text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    state text DEFAULT 'proposed'::text NOT NULL,
    proposed_by text,
    proposed_at timestamp with time zone DEFAULT now() NOT NULL,
    activated_by text,
    activated_at timestamp with time zone,
    suspended_by text,
    suspended_at timestamp with time zone,
    offboarded_by text,
    offboarded_at timestamp with time zone,
    CONSTRAINT vendors_adapter_check CHECK ((adapter = ANY (ARRAY['http'::text, 'points'::text, 'codepool'::text, 'simulated'::text]))),
    CONSTRAINT vendors_backoff_base_ms_check CHECK ((backoff_base_ms > 0)),
    CONSTRAINT vendors_backoff_max_ms_check CHECK ((backoff_max_ms > 0)),
    CONSTRAINT vendors_max_attempts_check CHECK ((max_attempts > 0)),
    CONSTRAINT vendors_max_in_flight_check CHECK ((max_in_flight > 0)),
    CONSTRAINT vendors_state_check CHECK ((state = ANY (ARRAY['proposed'::text, 'active'::text, 'suspended'::text, 'offboarded'::text]))),
    CONSTRAINT vendors_timeout_ms_check CHECK ((timeout_ms > 0))
);


--
-- Name: budget_movements id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.budget_movements ALTER COLUMN id SET DEFAULT nextval('public.budget_movements_id_seq'::regclass);


--
-- Name: login_failures id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.login_failures ALTER COLUMN id SET DEFAULT nextval('public.login_failures_id_seq'::regclass);


--
-- Name: statements id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.statements ALTER COLUMN id SET DEFAULT nextval('public.statements_id_seq'::regclass);


--
-- Name: audiences audiences_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audiences
    ADD CONSTRAINT audiences_pkey PRIMARY KEY (id);


--
-- Name: audit_chain_head audit_chain_head_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audit_chain_head
    ADD CONSTRAINT audit_chain_head_pkey PRIMARY KEY (only_row);


--
-- Name: audit_log audit_log_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audit_log
    ADD CONSTRAINT audit_log_pkey PRIMARY KEY (id);


--
-- Name: branch_budgets branch_budgets_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.branch_budgets
    ADD CONSTRAINT branch_budgets_pkey PRIMARY KEY (branch_id, period);


--
-- Name: branches branches_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.branches
    ADD CONSTRAINT branches_pkey PRIMARY KEY (id);


--
-- Name: budget_movements budget_movements_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.budget_movements
    ADD CONSTRAINT budget_movements_pkey PRIMARY KEY (id);


--
-- Name: budget_reservations budget_reservations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.budget_reservations
    ADD CONSTRAINT budget_reservations_pkey PRIMARY KEY (campaign_id);


--
-- Name: campaign_approvals campaign_approvals_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.campaign_approvals
    ADD CONSTRAINT campaign_approvals_pkey PRIMARY KEY (id);


--
-- Name: campaign_results campaign_results_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.campaign_results
    ADD CONSTRAINT campaign_results_pkey PRIMARY KEY (campaign_id, reward_id);


--
-- Name: campaign_revisions campaign_revisions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.campaign_revisions
    ADD CONSTRAINT campaign_revisions_pkey PRIMARY KEY (id);


--
-- Name: campaigns campaigns_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.campaigns
    ADD CONSTRAINT campaigns_pkey PRIMARY KEY (id);


--
-- Name: card_events card_events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.card_events
    ADD CONSTRAINT card_events_pkey PRIMARY KEY (channel_id, event_id);


--
-- Name: channels channels_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.channels
    ADD CONSTRAINT channels_pkey PRIMARY KEY (id);


--
-- Name: grant_events grant_events_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.grant_events
    ADD CONSTRAINT grant_events_pkey PRIMARY KEY (grant_id, outbox_id);


--
-- Name: grants grants_channel_id_request_id_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.grants
    ADD CONSTRAINT grants_channel_id_request_id_key UNIQUE (channel_id, request_id);


--
-- Name: grants grants_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.grants
    ADD CONSTRAINT grants_pkey PRIMARY KEY (grant_id);


--
-- Name: issuance_approvals issuance_approvals_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.issuance_approvals
    ADD CONSTRAINT issuance_approvals_pkey PRIMARY KEY (job_id, approver);


--
-- Name: issuance_jobs issuance_jobs_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.issuance_jobs
    ADD CONSTRAINT issuance_jobs_pkey PRIMARY KEY (id);


--
-- Name: issuance_lanes issuance_lanes_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.issuance_lanes
    ADD CONSTRAINT issuance_lanes_pkey PRIMARY KEY (job_id, lane);


--
-- Name: login_failures login_failures_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.login_failures
    ADD CONSTRAINT login_failures_pkey PRIMARY KEY (id);


--
-- Name: notifications notifications_dedupe_key_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notifications
    ADD CONSTRAINT notifications_dedupe_key_key UNIQUE (dedupe_key);


--
-- Name: notifications notifications_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.notifications
    ADD CONSTRAINT notifications_pkey PRIMARY KEY (id);


--
-- Name: redemptions redemptions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.redemptions
    ADD CONSTRAINT redemptions_pkey PRIMARY KEY (vendor_id, redemption_id);


--
-- Name: report_daily report_daily_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.report_daily
    ADD CONSTRAINT report_daily_pkey PRIMARY KEY (day, campaign_id, reward_id, channel_id);


--
-- Name: report_status report_status_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.report_status
    ADD CONSTRAINT report_status_pkey PRIMARY KEY (campaign_id, reward_id, status);


--
-- Name: rewards rewards_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rewards
    ADD CONSTRAINT rewards_pkey PRIMARY KEY (campaign_id, id);


--
-- Name: rights rights_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rights
    ADD CONSTRAINT rights_pkey PRIMARY KEY (id);


--
-- Name: schema_migrations schema_migrations_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);


--
-- Name: staff staff_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.staff
    ADD CONSTRAINT staff_pkey PRIMARY KEY (username);


--
-- Name: staff_sessions staff_sessions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.staff_sessions
    ADD CONSTRAINT staff_sessions_pkey PRIMARY KEY (token_hash);


--
-- Name: statements statements_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.statements
    ADD CONSTRAINT statements_pkey PRIMARY KEY (id);


--
-- Name: vendor_codes vendor_codes_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.vendor_codes
    ADD CONSTRAINT vendor_codes_pkey PRIMARY KEY (vendor_id, code);


--
-- Name: vendors vendors_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.vendors
    ADD CONSTRAINT vendors_pkey PRIMARY KEY (id);


--
-- Name: audit_log_action; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX audit_log_action ON public.audit_log USING btree (action text_pattern_ops, id);


--
-- Name: audit_log_actor; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX audit_log_actor ON public.audit_log USING btree (actor, id);


--
-- Name: audit_log_at; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX audit_log_at ON public.audit_log USING btree (at);


--
-- Name: audit_log_target; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX audit_log_target ON public.audit_log USING btree (target, at);


--
-- Name: audit_log_target_prefix; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX audit_log_target_prefix ON public.audit_log USING btree (target text_pattern_ops, id);


--
-- Name: branches_by_parent; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX branches_by_parent ON public.branches USING btree (parent_id);


--
-- Name: budget_movements_of_balance; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX budget_movements_of_balance ON public.budget_movements USING btree (branch_id, period, id);


--
-- Name: budget_movements_of_campaign; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX budget_movements_of_campaign ON public.budget_movements USING btree (campaign_id) WHERE (campaign_id IS NOT NULL);


--
-- Name: budget_reservations_of_balance; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX budget_reservations_of_balance ON public.budget_reservations USING btree (branch_id, period);


--
-- Name: campaign_approvals_by_campaign; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX campaign_approvals_by_campaign ON public.campaign_approvals USING btree (campaign_id, revision_id, id);


--
-- Name: campaign_approvals_once; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX campaign_approvals_once ON public.campaign_approvals USING btree (campaign_id, COALESCE(revision_id, (0)::bigint), approver) WHERE (superseded_at IS NULL);


--
-- Name: campaign_revisions_by_campaign; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX campaign_revisions_by_campaign ON public.campaign_revisions USING btree (campaign_id, id);


--
-- Name: campaign_revisions_one_open; Type: INDEX; Schema: public; Owner: -
--

CREATE UNIQUE INDEX campaign_revisions_one_open ON public.campaign_revisions USING btree (campaign_id) WHERE (status = ANY (ARRAY['draft'::text, 'pending'::text]));


--
-- Name: campaigns_live_window; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX campaigns_live_window ON public.campaigns USING btree (ends_at, starts_at) WHERE (status = ANY (ARRAY['approved'::text, 'paused'::text]));


--
-- Name: card_events_customer; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX card_events_customer ON public.card_events USING btree (customer_id, occurred_at);


--
-- Name: grants_campaign; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX grants_campaign ON public.grants USING btree (campaign_id, reward_id);


--
-- Name: grants_code; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX grants_code ON public.grants USING btree (vendor_id, code) WHERE (code IS NOT NULL);


--
-- Name: grants_customer; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX grants_customer ON public.grants USING btree (customer_id, granted_at DESC);


--
-- Name: grants_expiring; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX grants_expiring ON public.grants USING btree (expires_at) WHERE (status = 'fulfilled'::text);


--
-- Name: issuance_jobs_campaign; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX issuance_jobs_campaign ON public.issuance_jobs USING btree (campaign_id);


--
-- Name: issuance_jobs_running; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX issuance_jobs_running ON public.issuance_jobs USING btree (created_at) WHERE (state = 'running'::text);


--
-- Name: login_failures_by_age; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX login_failures_by_age ON public.login_failures USING btree (failed_at);


--
-- Name: login_failures_by_username; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX login_failures_by_username ON public.login_failures USING btree (username_digest, failed_at);


--
-- Name: notifications_due; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX notifications_due ON public.notifications USING btree (next_attempt_at) WHERE ((delivered_at IS NULL) AND (failed_at IS NULL));


--
-- Name: report_daily_branch; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX report_daily_branch ON public.report_daily USING btree (branch, day);


--
-- Name: report_daily_campaign; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX report_daily_campaign ON public.report_daily USING btree (campaign_id, day);


--
-- Name: rewards_right; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX rewards_right ON public.rewards USING btree (right_id);


--
-- Name: rights_vendor; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX rights_vendor ON public.rights USING btree (vendor_id) WHERE (vendor_id IS NOT NULL);


--
-- Name: staff_by_branch; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX staff_by_branch ON public.staff USING btree (branch);


--
-- Name: staff_sessions_by_username; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX staff_sessions_by_username ON public.staff_sessions USING btree (username);


--
-- Name: staff_sessions_expires; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX staff_sessions_expires ON public.staff_sessions USING btree (expires_at);


--
-- Name: statements_vendor_day; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX statements_vendor_day ON public.statements USING btree (vendor_id, day, id);


--
-- Name: audit_chain_head audit_chain_head_guard; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER audit_chain_head_guard BEFORE DELETE OR UPDATE OR TRUNCATE ON public.audit_chain_head FOR EACH STATEMENT EXECUTE FUNCTION public.audit_chain_head_guard();


--
-- Name: audit_log audit_log_append_only; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER audit_log_append_only BEFORE DELETE OR UPDATE OR TRUNCATE ON public.audit_log FOR EACH STATEMENT EXECUTE FUNCTION public.audit_log_refuse();


--
-- Name: audit_log audit_log_chain; Type: TRIGGER; Schema: public; Owner: -
--

CREATE CONSTRAINT TRIGGER audit_log_chain AFTER INSERT ON public.audit_log DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.audit_log_chain();


--
-- Name: audit_log audit_log_pending; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER audit_log_pending BEFORE INSERT ON public.audit_log FOR EACH ROW EXECUTE FUNCTION public.audit_log_pending();


--
-- Name: audit_log audit_log_sealed_once; Type: TRIGGER; Schema: public; Owner: -
--

CREATE TRIGGER audit_log_sealed_once BEFORE UPDATE ON public.audit_log FOR EACH ROW EXECUTE FUNCTION public.audit_log_refuse();


--
-- Name: audiences audiences_branch_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audiences
    ADD CONSTRAINT audiences_branch_fkey FOREIGN KEY (branch) REFERENCES public.branches(id);


--
-- Name: branch_budgets branch_budgets_branch_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.branch_budgets
    ADD CONSTRAINT branch_budgets_branch_id_fkey FOREIGN KEY (branch_id) REFERENCES public.branches(id);


--
-- Name: branches branches_parent_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.branches
    ADD CONSTRAINT branches_parent_id_fkey FOREIGN KEY (parent_id) REFERENCES public.branches(id);


--
-- Name: budget_movements budget_movements_branch_id_period_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.budget_movements
    ADD CONSTRAINT budget_movements_branch_id_period_fkey FOREIGN KEY (branch_id, period) REFERENCES public.branch_budgets(branch_id, period);


--
-- Name: budget_movements budget_movements_campaign_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.budget_movements
    ADD CONSTRAINT budget_movements_campaign_id_fkey FOREIGN KEY (campaign_id) REFERENCES public.campaigns(id);


--
-- Name: budget_movements budget_movements_counterpart_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.budget_movements
    ADD CONSTRAINT budget_movements_counterpart_fkey FOREIGN KEY (counterpart) REFERENCES public.branches(id);


--
-- Name: budget_reservations budget_reservations_branch_id_period_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.budget_reservations
    ADD CONSTRAINT budget_reservations_branch_id_period_fkey FOREIGN KEY (branch_id, period) REFERENCES public.branch_budgets(branch_id, period);


--
-- Name: budget_reservations budget_reservations_campaign_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.budget_reservations
    ADD CONSTRAINT budget_reservations_campaign_id_fkey FOREIGN KEY (campaign_id) REFERENCES public.campaigns(id);


--
-- Name: campaign_approvals campaign_approvals_campaign_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.campaign_approvals
    ADD CONSTRAINT campaign_approvals_campaign_id_fkey FOREIGN KEY (campaign_id) REFERENCES public.campaigns(id);


--
-- Name: campaign_approvals campaign_approvals_revision_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.campaign_approvals
    ADD CONSTRAINT campaign_approvals_revision_id_fkey FOREIGN KEY (revision_id) REFERENCES public.campaign_revisions(id);


--
-- Name: campaign_results campaign_results_campaign_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.campaign_results
    ADD CONSTRAINT campaign_results_campaign_id_fkey FOREIGN KEY (campaign_id) REFERENCES public.campaigns(id);


--
-- Name: campaign_revisions campaign_revisions_campaign_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.campaign_revisions
    ADD CONSTRAINT campaign_revisions_campaign_id_fkey FOREIGN KEY (campaign_id) REFERENCES public.campaigns(id);


--
-- Name: campaigns campaigns_branch_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.campaigns
    ADD CONSTRAINT campaigns_branch_fkey FOREIGN KEY (branch) REFERENCES public.branches(id);


--
-- Name: issuance_approvals issuance_approvals_job_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.issuance_approvals
    ADD CONSTRAINT issuance_approvals_job_id_fkey FOREIGN KEY (job_id) REFERENCES public.issuance_jobs(id);


--
-- Name: issuance_jobs issuance_jobs_audience_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.issuance_jobs
    ADD CONSTRAINT issuance_jobs_audience_id_fkey FOREIGN KEY (audience_id) REFERENCES public.audiences(id);


--
-- Name: issuance_jobs issuance_jobs_campaign_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.issuance_jobs
    ADD CONSTRAINT issuance_jobs_campaign_id_fkey FOREIGN KEY (campaign_id) REFERENCES public.campaigns(id);


--
-- Name: issuance_lanes issuance_lanes_job_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.issuance_lanes
    ADD CONSTRAINT issuance_lanes_job_id_fkey FOREIGN KEY (job_id) REFERENCES public.issuance_jobs(id);


--
-- Name: rewards rewards_audience_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rewards
    ADD CONSTRAINT rewards_audience_id_fkey FOREIGN KEY (audience_id) REFERENCES public.audiences(id);


--
-- Name: rewards rewards_campaign_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rewards
    ADD CONSTRAINT rewards_campaign_id_fkey FOREIGN KEY (campaign_id) REFERENCES public.campaigns(id) ON DELETE CASCADE;


--
-- Name: rewards rewards_right_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rewards
    ADD CONSTRAINT rewards_right_id_fkey FOREIGN KEY (right_id) REFERENCES public.rights(id);


--
-- Name: rights rights_vendor; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.rights
    ADD CONSTRAINT rights_vendor FOREIGN KEY (vendor_id) REFERENCES public.vendors(id);


--
-- Name: staff staff_branch_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.staff
    ADD CONSTRAINT staff_branch_fkey FOREIGN KEY (branch) REFERENCES public.branches(id);


--
-- Name: staff_sessions staff_sessions_username_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.staff_sessions
    ADD CONSTRAINT staff_sessions_username_fkey FOREIGN KEY (username) REFERENCES public.staff(username);


--
-- Name: statements statements_vendor_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.statements
    ADD CONSTRAINT statements_vendor_id_fkey FOREIGN KEY (vendor_id) REFERENCES public.vendors(id);


--
-- Name: vendor_codes vendor_codes_right_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.vendor_codes
    ADD CONSTRAINT vendor_codes_right_id_fkey FOREIGN KEY (right_id) REFERENCES public.rights(id);


--
-- Name: vendor_codes vendor_codes_vendor_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.vendor_codes
    ADD CONSTRAINT vendor_codes_vendor_id_fkey FOREIGN KEY (vendor_id) REFERENCES public.vendors(id);


--
-- PostgreSQL database dump complete
--
