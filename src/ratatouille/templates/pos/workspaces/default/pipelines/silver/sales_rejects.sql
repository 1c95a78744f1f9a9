-- @materialized: incremental
-- @unique_key: txn_id
-- @incremental: {strategy: delete+insert, watermark: _ingested_at}
-- Sales rows that silver.sales leaves out, each with the reason: nothing disappears silently.
SELECT
    txn_id,
    transaction_ts AS raw_transaction_ts,
    store_id,
    quantity,
    unit_price,
    CASE
        WHEN quantity IS NULL OR quantity <= 0 THEN 'quantity must be positive'
        WHEN unit_price IS NULL THEN 'missing unit price'
        ELSE 'unreadable timestamp'
    END AS reason,
    _source_file,
    _ingested_at
FROM {{ source('sales') }}
WHERE (quantity IS NULL OR quantity <= 0 OR unit_price IS NULL OR {{ parse_pos_timestamp('transaction_ts') }} IS NULL)
{% if is_incremental() %}
  AND _ingested_at > {{ watermark('_ingested_at') }}
{% endif %}
