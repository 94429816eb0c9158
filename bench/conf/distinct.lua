-- wrk: a header with a value no other request of the run has, on every
-- request (run.sh's variants with V_DISTINCT: a rate limit keyed by the
-- header sees a new key every time). The header's name comes from
-- DISTINCT_HEADER; the values start with the second the run began, so
-- rounds do not reuse each other's keys. Headers given with -H are kept
-- (wrk.format uses the table it is given instead of wrk.headers).
local name = os.getenv("DISTINCT_HEADER") or "x-api-key"
local base = tostring(os.time()) .. "-"
local n = 0
local headers = {}

function init(args)
    for k, v in pairs(wrk.headers) do
        headers[k] = v
    end
end

request = function()
    n = n + 1
    headers[name] = base .. n
    return wrk.format(nil, nil, headers)
end
