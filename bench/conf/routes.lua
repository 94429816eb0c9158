-- wrk: every request to the next route, /api/s0/x .. /api/s<N-1>/x in
-- turn (N from ROUTES, default 10000), so that every route of the
-- configuration gets its metric series (run.sh's scrape scenario).
local n = tonumber(os.getenv("ROUTES") or "10000")
local i = 0

request = function()
    local path = "/api/s" .. i .. "/x"
    i = (i + 1) % n
    return wrk.format("GET", path)
end
