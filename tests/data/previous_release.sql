-- Schema vbapi as the previous release (five hand-written entities) created it:
-- pg_dump --schema-only of a database it migrated.  Used by the upgrade test.
CREATE SCHEMA vbapi;
CREATE TABLE vbapi.armor_code_ex_code (
    armorcodeexcode_key integer NOT NULL,
    armor_code text NOT NULL,
    ex_code text NOT NULL,
    entry_date timestamp with time zone,
    entry_user character varying(20),
    update_date timestamp with time zone,
    update_user character varying(20),
    upsert_source_ts timestamp with time zone,
    upsert_message_id text
);
CREATE TABLE vbapi.benefit (
    benefit_code character varying(10) NOT NULL,
    allow_flat_tax boolean NOT NULL,
    benefit_category text,
    benefit_description text,
    default_unit_type text,
    hipaa_code text,
    invalid_diag_ex_code text,
    invalid_procedure_ex_code text,
    invalid_prov_type_ex_code text,
    invalid_specialty_ex_code text,
    medicare character varying(1) NOT NULL,
    pend_ex_code text,
    pend_flag character varying(1) NOT NULL,
    require_type_of_svc text,
    entry_date timestamp with time zone,
    entry_user character varying(20),
    update_date timestamp with time zone,
    update_user character varying(20),
    upsert_source_ts timestamp with time zone,
    upsert_message_id text
);
CREATE TABLE vbapi.benefit_category (
    benefit_category text NOT NULL
);
CREATE TABLE vbapi.group_division (
    group_id character varying(20) NOT NULL,
    division_id text NOT NULL
);
CREATE TABLE vbapi.group_flex (
    group_id character varying(20) NOT NULL,
    plan_id character varying(20) NOT NULL,
    calendar_year character varying(4) NOT NULL
);
CREATE TABLE vbapi.group_flex_schedule (
    groupflexschedule_key integer NOT NULL,
    calendar_year character varying(4) NOT NULL,
    group_id character varying(20) NOT NULL,
    plan_id character varying(20) NOT NULL,
    schedule_date timestamp with time zone NOT NULL,
    schedule_type character varying(16) NOT NULL,
    entry_date timestamp with time zone,
    entry_user character varying(20),
    update_date timestamp with time zone,
    update_user character varying(20),
    upsert_source_ts timestamp with time zone,
    upsert_message_id text
);
CREATE TABLE vbapi.group_plan_year (
    group_id character varying(20) NOT NULL,
    division_id text NOT NULL,
    plan_year text NOT NULL,
    ex_code text,
    from_date timestamp with time zone,
    plan_type text,
    qtr4_accum boolean NOT NULL,
    qtr4_benefit_code text,
    qtr4_deductible boolean NOT NULL,
    qtr4_from_date timestamp with time zone,
    qtr4_member boolean NOT NULL,
    qtr4_out_of_pocket boolean NOT NULL,
    qtr4_out_of_pocket_type text,
    qtr4_planyear text,
    qtr4_subscriber boolean NOT NULL,
    qtr4_thru_date timestamp with time zone,
    thru_date timestamp with time zone,
    entry_date timestamp with time zone,
    entry_user character varying(20),
    update_date timestamp with time zone,
    update_user character varying(20),
    upsert_source_ts timestamp with time zone,
    upsert_message_id text
);
CREATE TABLE vbapi.schema_entities (
    entity text NOT NULL,
    table_name text NOT NULL,
    fingerprint text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE TABLE vbapi.schema_migrations (
    version integer NOT NULL,
    description text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE TABLE vbapi.subscriber_flex (
    subscriber_id character varying(9) NOT NULL,
    group_id character varying(20) NOT NULL,
    plan_id character varying(20) NOT NULL,
    calendar_year character varying(4) NOT NULL,
    effective_date timestamp with time zone NOT NULL
);
CREATE TABLE vbapi.subscriber_flex_exported (
    subscriberflexexported_key integer NOT NULL,
    calendar_year character varying(4) NOT NULL,
    effective_date timestamp with time zone NOT NULL,
    export_amount numeric,
    export_date timestamp with time zone,
    export_status character varying(32),
    export_type character varying(32),
    group_id character varying(20) NOT NULL,
    plan_id character varying(20) NOT NULL,
    subscriber_id character varying(9) NOT NULL,
    entry_date timestamp with time zone,
    entry_user character varying(20),
    update_date timestamp with time zone,
    update_user character varying(20),
    upsert_source_ts timestamp with time zone,
    upsert_message_id text
);
CREATE TABLE vbapi.upsert_processed_message (
    message_id text NOT NULL,
    status integer NOT NULL,
    reply bytea NOT NULL,
    processed_at timestamp with time zone DEFAULT now() NOT NULL
);
ALTER TABLE ONLY vbapi.armor_code_ex_code
    ADD CONSTRAINT armor_code_ex_code_pkey PRIMARY KEY (armorcodeexcode_key);
ALTER TABLE ONLY vbapi.benefit_category
    ADD CONSTRAINT benefit_category_pkey PRIMARY KEY (benefit_category);
ALTER TABLE ONLY vbapi.benefit
    ADD CONSTRAINT benefit_pkey PRIMARY KEY (benefit_code);
ALTER TABLE ONLY vbapi.group_division
    ADD CONSTRAINT group_division_pkey PRIMARY KEY (group_id, division_id);
ALTER TABLE ONLY vbapi.group_flex
    ADD CONSTRAINT group_flex_pkey PRIMARY KEY (group_id, plan_id, calendar_year);
ALTER TABLE ONLY vbapi.group_flex_schedule
    ADD CONSTRAINT group_flex_schedule_pkey PRIMARY KEY (groupflexschedule_key);
ALTER TABLE ONLY vbapi.group_plan_year
    ADD CONSTRAINT group_plan_year_pkey PRIMARY KEY (group_id, division_id, plan_year);
ALTER TABLE ONLY vbapi.schema_entities
    ADD CONSTRAINT schema_entities_pkey PRIMARY KEY (entity);
ALTER TABLE ONLY vbapi.schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);
ALTER TABLE ONLY vbapi.subscriber_flex_exported
    ADD CONSTRAINT subscriber_flex_exported_pkey PRIMARY KEY (subscriberflexexported_key);
ALTER TABLE ONLY vbapi.subscriber_flex
    ADD CONSTRAINT subscriber_flex_pkey PRIMARY KEY (subscriber_id, group_id, plan_id, calendar_year, effective_date);
ALTER TABLE ONLY vbapi.upsert_processed_message
    ADD CONSTRAINT upsert_processed_message_pkey PRIMARY KEY (message_id);
CREATE INDEX upsert_processed_message_processed_at ON vbapi.upsert_processed_message USING btree (processed_at);
ALTER TABLE ONLY vbapi.benefit
    ADD CONSTRAINT benefit_parent_fk FOREIGN KEY (benefit_category) REFERENCES vbapi.benefit_category(benefit_category);
ALTER TABLE ONLY vbapi.group_flex_schedule
    ADD CONSTRAINT group_flex_schedule_parent_fk FOREIGN KEY (group_id, plan_id, calendar_year) REFERENCES vbapi.group_flex(group_id, plan_id, calendar_year);
ALTER TABLE ONLY vbapi.group_plan_year
    ADD CONSTRAINT group_plan_year_parent_fk FOREIGN KEY (group_id, division_id) REFERENCES vbapi.group_division(group_id, division_id);
ALTER TABLE ONLY vbapi.subscriber_flex_exported
    ADD CONSTRAINT subscriber_flex_exported_parent_fk FOREIGN KEY (subscriber_id, group_id, plan_id, calendar_year, effective_date) REFERENCES vbapi.subscriber_flex(subscriber_id, group_id, plan_id, calendar_year, effective_date);
INSERT INTO vbapi.schema_migrations (version, description) VALUES (1, 'processed messages: one row per batch message_id with its reply');
