-- The warehouse: every table, view and lifetime of rkd.server, in one file (spec §6.2-6.3).
--
-- Migrations are the numbered sections below ("-- migration N: why"); `rkd-server
-- migrate` applies, in order and once, those above the version recorded in
-- schema_migrations. Never edit an applied section: add a new one.
--
-- Lifetimes are the engine's (TTL), not a cron script: raw events 90 days, hourly
-- aggregates 1 year, daily aggregates 3 years, monthly summaries forever. Every table is
-- partitioned by month: offline clients send old events, and daily partitions would make
-- an insert touch hundreds of parts. The rollups are fed at insert time by materialized
-- views; a retried batch never reaches them twice because the ingester drops any batch
-- whose id is already in `batches` (fed by a view from the same insert as the raw rows).
--
-- Nothing here holds an IP address or a key id. `rkd-server schema --cluster NAME`
-- prints the Replicated/Distributed variant of this same text.

-- migration 1: raw events, batches, rollups, community reports
CREATE TABLE IF NOT EXISTS {db}.events
(
    batch_id FixedString(32),
    event_id UUID,
    event_type LowCardinality(String),
    category LowCardinality(String),
    schema_version LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    received DateTime('UTC'),
    product LowCardinality(String),
    version LowCardinality(String),
    tier LowCardinality(String),
    os LowCardinality(String),
    arch LowCardinality(String),
    python_version LowCardinality(String),
    session_id Nullable(UUID),
    session_seq Nullable(UInt32),
    subject LowCardinality(String),
    duration_ms Nullable(UInt64),
    success Nullable(UInt8),
    payload String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (product, event_type, ts, event_id)
TTL toDateTime(ts) + INTERVAL 90 DAY
SETTINGS merge_with_ttl_timeout = 3600;

CREATE TABLE IF NOT EXISTS {db}.batches
(
    batch_id FixedString(32),
    received DateTime('UTC'),
    events UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received)
ORDER BY batch_id
TTL received + INTERVAL 90 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.batches_mv TO {db}.batches AS
SELECT batch_id, max(received) AS received, count() AS events
FROM {db}.events GROUP BY batch_id;

CREATE TABLE IF NOT EXISTS {db}.events_hourly
(
    hour DateTime('UTC'),
    product LowCardinality(String),
    version LowCardinality(String),
    tier LowCardinality(String),
    os LowCardinality(String),
    arch LowCardinality(String),
    event_type LowCardinality(String),
    subject LowCardinality(String),
    events UInt64,
    failures UInt64,
    duration_ms_sum UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (product, event_type, subject, hour, version, tier, os, arch)
TTL hour + INTERVAL 1 YEAR;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.events_hourly_mv TO {db}.events_hourly AS
SELECT toStartOfHour(ts) AS hour, product, version, tier, os, arch, event_type, subject,
       count() AS events, countIf(success = 0) AS failures,
       sum(ifNull(duration_ms, 0)) AS duration_ms_sum
FROM {db}.events GROUP BY hour, product, version, tier, os, arch, event_type, subject;

CREATE TABLE IF NOT EXISTS {db}.events_daily
(
    day Date,
    product LowCardinality(String),
    version LowCardinality(String),
    tier LowCardinality(String),
    os LowCardinality(String),
    arch LowCardinality(String),
    event_type LowCardinality(String),
    subject LowCardinality(String),
    events UInt64,
    failures UInt64,
    duration_ms_sum UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (product, event_type, subject, day, version, tier, os, arch)
TTL day + INTERVAL 3 YEAR;

-- Fed from the hourly block of the same insert (already grouped: a few rows, not the
-- raw block), so the raw rows are grouped once. Sums of sums: exact.
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.events_daily_mv TO {db}.events_daily AS
SELECT toDate(hour) AS day, product, version, tier, os, arch, event_type, subject,
       sum(events) AS events, sum(failures) AS failures, sum(duration_ms_sum) AS duration_ms_sum
FROM {db}.events_hourly GROUP BY day, product, version, tier, os, arch, event_type, subject;

CREATE TABLE IF NOT EXISTS {db}.events_monthly
(
    month Date,
    product LowCardinality(String),
    tier LowCardinality(String),
    event_type LowCardinality(String),
    subject LowCardinality(String),
    events UInt64,
    failures UInt64,
    duration_ms_sum UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYear(month)
ORDER BY (product, event_type, subject, month, tier);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.events_monthly_mv TO {db}.events_monthly AS
SELECT toStartOfMonth(day) AS month, product, tier, event_type, subject,
       sum(events) AS events, sum(failures) AS failures, sum(duration_ms_sum) AS duration_ms_sum
FROM {db}.events_daily GROUP BY month, product, tier, event_type, subject;

-- One row per community report (no id, no address). `body` keeps the whole report as
-- JSON, so a field the report schema adds is stored before it gets a column.
CREATE TABLE IF NOT EXISTS {db}.reports
(
    day Date,
    received DateTime('UTC'),
    report_version UInt8,
    product LowCardinality(String),
    version LowCardinality(String),
    tier LowCardinality(String),
    os LowCardinality(String),
    arch LowCardinality(String),
    cohort_week LowCardinality(String),
    install_age_days UInt8,
    new_install UInt8,
    first_of_week UInt8,
    first_of_month UInt8,
    sessions Int64,
    commands Int64,
    errors Int64,
    dp_epsilon Float64,
    count_dimension Array(LowCardinality(String)),
    count_key Array(String),
    count_n Array(Int64),
    latency_ms Array(Int64),
    body String CODEC(ZSTD(3))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (product, day, version, os)
TTL day + INTERVAL 3 YEAR;

-- Sums over reports (DAU = reports, WAU = first_of_week, MAU = first_of_month); exact
-- and randomized (dp_epsilon > 0) reports are never summed together.
CREATE TABLE IF NOT EXISTS {db}.reports_daily
(
    day Date,
    product LowCardinality(String),
    version LowCardinality(String),
    tier LowCardinality(String),
    os LowCardinality(String),
    dp_epsilon Float64,
    reports UInt64,
    new_installs Int64,
    first_of_week Int64,
    first_of_month Int64,
    sessions Int64,
    commands Int64,
    errors Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (product, day, dp_epsilon, version, tier, os);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.reports_daily_mv TO {db}.reports_daily AS
SELECT day, product, version, tier, os, dp_epsilon, count() AS reports,
       sum(new_install) AS new_installs, sum(first_of_week) AS first_of_week,
       sum(first_of_month) AS first_of_month, sum(sessions) AS sessions,
       sum(commands) AS commands, sum(errors) AS errors
FROM {db}.reports GROUP BY day, product, version, tier, os, dp_epsilon;

CREATE TABLE IF NOT EXISTS {db}.report_counts_daily
(
    day Date,
    product LowCardinality(String),
    dp_epsilon Float64,
    dimension LowCardinality(String),
    key String,
    n Int64
)
ENGINE = SummingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (product, dimension, key, day, dp_epsilon);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.report_counts_daily_mv TO {db}.report_counts_daily AS
SELECT day, product, dp_epsilon, dimension, key, sum(n) AS n
FROM {db}.reports
ARRAY JOIN count_dimension AS dimension, count_key AS key, count_n AS n
GROUP BY day, product, dp_epsilon, dimension, key;

-- Art. 17 requests served (counts only, for the transparency report).
CREATE TABLE IF NOT EXISTS {db}.erasures
(
    day Date,
    requests UInt64,
    sessions UInt64,
    events_deleted UInt64
)
ENGINE = SummingMergeTree
PARTITION BY toYear(day)
ORDER BY day;

-- migration 2: fewer merges of the tables each insert writes
-- Each group commit makes a part in the raw table, in batches and in each rollup; with the
-- default merge selector (base 5) each raw row was rewritten about four times on its way
-- to a big part: a fifth of the server's CPU at ~50k events/s on 2 cores. Base 20 merges
-- far less (raw table alone: 1.5 against 4.0-9.5 µs of merge CPU per row; with the views,
-- every table at 20: 2.0-3.4 against 3.5-6.0 with only the raw one) for about twice as
-- many parts per partition (tens, far below parts_to_delay_insert). Reads are unchanged:
-- the rollups are read with sum(), never FINAL.
ALTER TABLE {db}.events MODIFY SETTING merge_selector_base = 20;
ALTER TABLE {db}.batches MODIFY SETTING merge_selector_base = 20;
ALTER TABLE {db}.events_hourly MODIFY SETTING merge_selector_base = 20;
ALTER TABLE {db}.events_daily MODIFY SETTING merge_selector_base = 20;
ALTER TABLE {db}.events_monthly MODIFY SETTING merge_selector_base = 20;

-- migration 3: a group commit that failed part-way is finished by its retry
-- An insert writes the raw part, then each view's part: a failure after some of them
-- (a full disk, a memory limit, a killed process) left the rest without the group, and
-- the group's batches in `batches`, so the senders' retries were taken for duplicates and
-- those rollups missed them for good. Each group commit now carries a deduplication
-- token and is retried with it (deduplicate_blocks_in_dependent_materialized_views):
-- the tables that have the group skip it, the ones that missed it get it. The window is
-- how many recent inserts a table remembers: ~15 minutes of group commits at 10 a second,
-- longer than the ingester keeps retrying a group. Inserts without a token (none of the
-- ingester's) would be deduplicated only if byte-identical; views never, without a token.
ALTER TABLE {db}.events MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.batches MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.events_hourly MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.events_daily MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE {db}.events_monthly MODIFY SETTING non_replicated_deduplication_window = 10000;
