-- @materialized: incremental
-- @unique_key: sales_date
-- @incremental: {strategy: delete+insert, watermark: _ingested_at}
-- Daily KPIs per store. Incremental with delete+insert: a run recomputes only the days that
-- received new sales, replacing those days' rows (several rows share a sales_date).
WITH days AS (
    SELECT DISTINCT CAST(transaction_ts AS DATE) AS sales_date
    FROM {{ ref('silver.sales') }}
    {% if is_incremental() %}
    WHERE _ingested_at > {{ watermark('_ingested_at') }}
    {% endif %}
)
SELECT
    CAST(s.transaction_ts AS DATE) AS sales_date,
    s.store_id,
    st.region,
    count(*) AS transactions,
    sum(s.quantity) AS units,
    sum(s.total_amount) AS revenue,
    round(sum(s.total_amount) / count(*), 2) AS avg_basket,
    count(DISTINCT s.customer_id) AS known_customers,
    max(s._ingested_at) AS _ingested_at
FROM {{ ref('silver.sales') }} AS s
JOIN days AS d ON CAST(s.transaction_ts AS DATE) = d.sales_date
LEFT JOIN {{ ref('silver.stores') }} AS st USING (store_id)
GROUP BY ALL
