-- wrk: POST the seed's body with a distinct anomaly name per request,
-- bench.<thread>.<counter>.high (one reflex glob, bench.*.high, matches them
-- all). At the end prints "distinct: generated=N" (requests built, summed
-- over threads; wrk's "requests in" counts the completed ones).
local threads = {}
local next_id = 0

function setup(thread)
    next_id = next_id + 1
    thread:set("tid", next_id)
    table.insert(threads, thread)
end

function init(args)
    counter = 0
    prefix = '{"name": "bench.' .. tid .. '.'
    suffix = '.high", "details": {"latency_ms": 5000, "region": "us-east-1"}}'
    wrk.method = "POST"
    wrk.headers["Content-Type"] = "application/json"
end

function request()
    counter = counter + 1
    return wrk.format(nil, nil, nil, prefix .. counter .. suffix)
end

function done(summary, latency, requests)
    local generated = 0
    for _, thread in ipairs(threads) do
        generated = generated + thread:get("counter")
    end
    io.write(string.format("distinct: generated=%d completed=%d\n", generated, summary.requests))
end
