-- The mesh counts node, registration and submission budgets with the one
-- rate limiter every function uses (`rate_limits`); its own window table
-- goes. Counts in flight are forgotten: at worst a node gets one fresh
-- minute.
DROP TABLE mesh_rate;
