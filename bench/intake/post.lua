-- wrk: POST the seed's anomaly (or the name in ANOMALY) as JSON.
local name = os.getenv("ANOMALY") or "api_latency.coinbase.high"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"name": "' .. name .. '", "details": {"latency_ms": 5000, "region": "us-east-1"}}'
