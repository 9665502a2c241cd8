-- Generated from monitor/sinks/clickhouse.py (schema_sql); the sink applies it at start-up.
-- tests/test_deploy_config.py checks that this file matches the code.
CREATE DATABASE IF NOT EXISTS monitor;

CREATE TABLE IF NOT EXISTS monitor.alerts (
  alert_id String,
  rule_id LowCardinality(String),
  fixmedins_code String,
  admdvs LowCardinality(String),
  severity LowCardinality(String),
  window_start DateTime64(3, 'Asia/Shanghai'),
  window_end DateTime64(3, 'Asia/Shanghai'),
  detected_at DateTime64(3, 'Asia/Shanghai'),
  day Date,
  basis String,
  policy LowCardinality(String),
  rule_name String,
  vola_cont String,
  vola_amt Decimal(18, 2),
  sev_deg LowCardinality(String),
  vola_evid String,
  vola_bhvr_type LowCardinality(String),
  evidence String
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (fixmedins_code, alert_id);

CREATE TABLE IF NOT EXISTS monitor.tickets (
  ticket_id String,
  fixmedins_code String,
  admdvs LowCardinality(String),
  action LowCardinality(String),
  issued_at DateTime64(3, 'Asia/Shanghai'),
  effective_from Date,
  effective_until Nullable(Date),
  rectify_by Nullable(Date),
  reapply_after Nullable(Date),
  requires_verification Bool,
  ladder LowCardinality(String),
  rule_ids Array(String),
  alert_ids Array(String),
  basis Array(String),
  policy LowCardinality(String),
  summary_zh String,
  summary_en String,
  ref_ticket_id Nullable(String),
  reason Nullable(String)
) ENGINE = ReplacingMergeTree
ORDER BY (fixmedins_code, ticket_id);

CREATE TABLE IF NOT EXISTS monitor.institution_daily (
  fixmedins_code String,
  day Date,
  admdvs LowCardinality(String),
  records_settlements UInt32,
  records_inventory UInt32,
  records_tracecodes UInt32,
  records_prescriptions UInt32,
  late UInt32,
  lag_p50_s Float64,
  lag_p90_s Float64,
  lag_p99_s Float64,
  lag_max_s Float64,
  settlement_lines UInt32,
  completeness Nullable(Float64),
  trace_packs Decimal(18, 3),
  trace_codes UInt32,
  trace_coverage Nullable(Float64),
  rx_required UInt32,
  rx_coverage Nullable(Float64),
  dual_price_overcharge Decimal(18, 2),
  alerts UInt32,
  version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (fixmedins_code, day);

CREATE TABLE IF NOT EXISTS monitor.institutions (
  fixmedins_code String,
  fixmedins_name String,
  fixmedins_type LowCardinality(String),
  admdvs LowCardinality(String),
  outpatient_pooling Bool,
  agreement_start Date,
  agreement_end Date,
  designated_since Date,
  tier Nullable(String),
  tier_scheme Nullable(String),
  valid_from DateTime64(3, 'Asia/Shanghai'),
  version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (fixmedins_code);
