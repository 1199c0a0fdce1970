-- wrk script: POST the load balancing module's prioritize request, the body read once from the
-- file named by PRIORITIZE_BODY, with the headers QPS sends.
local path = os.getenv("PRIORITIZE_BODY")
local f = assert(io.open(path, "rb"), "cannot open " .. tostring(path))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Qlik-User"] = "UserDirectory=INTERNAL; UserId=sa_proxy"
wrk.headers["X-Qlik-Security"] = "Context=ManagementAccess; SecureRequest=true"
