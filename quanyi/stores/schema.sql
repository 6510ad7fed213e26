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
-- Name: audit_log; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.audit_log (
    id bigint NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    actor text NOT NULL,
    branch text NOT NULL,
    action text NOT NULL,
    target text NOT NULL,
    detail jsonb DEFAULT '{}'::jsonb NOT NULL
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
    CONSTRAINT campaigns_budget_check CHECK ((budget >= 0)),
    CONSTRAINT campaigns_check CHECK ((ends_at > starts_at)),
    CONSTRAINT campaigns_status_check CHECK ((status = ANY (ARRAY['draft'::text, 'pending'::text, 'approved'::text, 'rejected'::text, 'paused'::text, 'ended'::text])))
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
    CONSTRAINT rewards_auto_has_goal CHECK (((grant_mode = 'claim'::text) OR (goal IS NOT NULL))),
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
    CONSTRAINT rights_face_value_check CHECK ((face_value >= 0)),
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
    CONSTRAINT staff_role_check CHECK ((role = ANY (ARRAY['marketer'::text, 'approver'::text, 'admin'::text])))
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
    report jsonb NOT NULL
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
    CONSTRAINT vendors_adapter_check CHECK ((adapter = ANY (ARRAY['http'::text, 'points'::text, 'codepool'::text, 'simulated'::text]))),
    CONSTRAINT vendors_backoff_base_ms_check CHECK ((backoff_base_ms > 0)),
    CONSTRAINT vendors_backoff_max_ms_check CHECK ((backoff_max_ms > 0)),
    CONSTRAINT vendors_max_attempts_check CHECK ((max_attempts > 0)),
    CONSTRAINT vendors_max_in_flight_check CHECK ((max_in_flight > 0)),
    CONSTRAINT vendors_timeout_ms_check CHECK ((timeout_ms > 0))
);


--
-- Name: audit_log id; Type: DEFAULT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audit_log ALTER COLUMN id SET DEFAULT nextval('public.audit_log_id_seq'::regclass);


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
-- Name: audit_log audit_log_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.audit_log
    ADD CONSTRAINT audit_log_pkey PRIMARY KEY (id);


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
    ADD CONSTRAINT grant_events_pkey PRIMARY KEY (outbox_id);


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
-- Name: login_failures login_failures_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.login_failures
    ADD CONSTRAINT login_failures_pkey PRIMARY KEY (id);


--
-- Name: redemptions redemptions_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.redemptions
    ADD CONSTRAINT redemptions_pkey PRIMARY KEY (vendor_id, redemption_id);


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
-- Name: audit_log_target; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX audit_log_target ON public.audit_log USING btree (target, at);


--
-- Name: card_events_customer; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX card_events_customer ON public.card_events USING btree (customer_id, occurred_at);


--
-- Name: grant_events_grant; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX grant_events_grant ON public.grant_events USING btree (grant_id);


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
-- Name: login_failures_by_age; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX login_failures_by_age ON public.login_failures USING btree (failed_at);


--
-- Name: login_failures_by_username; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX login_failures_by_username ON public.login_failures USING btree (username_digest, failed_at);


--
-- Name: rewards_right; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX rewards_right ON public.rewards USING btree (right_id);


--
-- Name: staff_sessions_expires; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX staff_sessions_expires ON public.staff_sessions USING btree (expires_at);


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
