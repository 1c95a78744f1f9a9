-- @materialized: table
-- Product ranking by revenue, with margin, rebuilt on every run (it is small).
SELECT
    p.product_id,
    p.product_name,
    p.category,
    sum(s.quantity) AS units,
    sum(s.total_amount) AS revenue,
    sum(s.quantity * p.unit_margin) AS margin,
    rank() OVER (ORDER BY sum(s.total_amount) DESC) AS revenue_rank
FROM {{ ref('silver.sales') }} AS s
JOIN {{ ref('silver.products') }} AS p USING (product_id)
GROUP BY ALL
