-- @materialized: table
-- Product dimension with the margin per unit.
SELECT
    product_id,
    trim(sku) AS sku,
    trim(product_name) AS product_name,
    trim(category) AS category,
    trim(brand) AS brand,
    unit_price,
    cost,
    unit_price - cost AS unit_margin
FROM {{ source('products') }}
QUALIFY row_number() OVER (PARTITION BY product_id ORDER BY _ingested_at DESC) = 1
