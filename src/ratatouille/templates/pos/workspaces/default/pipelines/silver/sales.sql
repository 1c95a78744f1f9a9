-- @materialized: incremental
-- @unique_key: txn_id
-- Cleaned, deduplicated sales. Incremental: each run reads only the bronze rows ingested
-- since the last run (the watermark) and merges them by txn_id, so re-sent rows update
-- instead of duplicating. Rows that fail the business rules are kept out of here and listed,
-- with the reason, in silver.sales_rejects.
WITH fresh AS (
    SELECT *
    FROM {{ source('sales') }}
    {% if is_incremental() %}
    WHERE _ingested_at > {{ watermark('_ingested_at') }}
    {% endif %}
),
cleaned AS (
    SELECT
        txn_id,
        {{ parse_pos_timestamp('transaction_ts') }} AS transaction_ts,
        {{ clean_code('store_id') }} AS store_id,
        product_id,
        quantity,
        unit_price,
        round(quantity * unit_price, 2)::DECIMAL(12, 2) AS total_amount,
        lower(trim(payment_method)) AS payment_method,
        nullif(trim(customer_id), '') AS customer_id,
        store_group,
        _source_file,
        _ingested_at
    FROM fresh
)
SELECT *
FROM cleaned
WHERE quantity > 0 AND unit_price IS NOT NULL AND transaction_ts IS NOT NULL
-- An exact re-send carries the same txn_id: keep one.
QUALIFY row_number() OVER (PARTITION BY txn_id ORDER BY _ingested_at DESC, _source_file) = 1
