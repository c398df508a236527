-- wrk script for tests/bench/kv.sh: KV PUT or GET against pilotfish (Consul
-- HTTP API) or etcd 3.4 (its JSON gateway, base64 keys and values).
--
--   wrk ... -s kv.lua URL -- <pilotfish|etcd> <put|get> [keys]
--
-- Keys are bench/0 .. bench/<keys-1>; each thread walks them from its own
-- offset, so PUTs overwrite a fixed key set that the GET phase then reads.
-- done() prints one machine-readable line that kv.sh parses:
--   RESULT rps=<requests/s> p50_ms=<ms> p99_ms=<ms> requests=<n> errors=<non-2xx+socket errors>

local threads = {}
local counter = 1

function setup(thread)
   thread:set("id", counter)
   table.insert(threads, thread)
   counter = counter + 1
end

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
   local out = {}
   for i = 1, #s, 3 do
      local a, b, c = s:byte(i, i + 2)
      local n = a * 65536 + (b or 0) * 256 + (c or 0)
      local quad = {}
      for j = 3, 0, -1 do
         local k = math.floor(n / 64 ^ j) % 64
         quad[#quad + 1] = b64chars:sub(k + 1, k + 1)
      end
      if not b then quad[3] = "=" end
      if not c then quad[4] = "=" end
      out[#out + 1] = table.concat(quad)
   end
   return table.concat(out)
end

local system, op, keys
local requests = {}
local next_request = 1

function init(args)
   system = args[1] or "pilotfish"
   op = args[2] or "put"
   keys = tonumber(args[3] or "1000")
   local value = string.rep("v", 64)
   -- Prebuild every request so that request() costs no string work.
   for i = 0, keys - 1 do
      local key = "bench/" .. i
      if system == "pilotfish" then
         if op == "put" then
            requests[#requests + 1] = wrk.format("PUT", "/v1/kv/" .. key, nil, value)
         else
            requests[#requests + 1] = wrk.format("GET", "/v1/kv/" .. key)
         end
      else
         local headers = { ["Content-Type"] = "application/json" }
         if op == "put" then
            local body = '{"key":"' .. base64(key) .. '","value":"' .. base64(value) .. '"}'
            requests[#requests + 1] = wrk.format("POST", "/v3/kv/put", headers, body)
         else
            local body = '{"key":"' .. base64(key) .. '"}'
            requests[#requests + 1] = wrk.format("POST", "/v3/kv/range", headers, body)
         end
      end
   end
   next_request = ((id or 1) * 7919) % keys + 1
end

function request()
   local r = requests[next_request]
   next_request = next_request % keys + 1
   return r
end

function done(summary, latency, _)
   local seconds = summary.duration / 1e6
   local e = summary.errors
   local errors = e.connect + e.read + e.write + e.status + e.timeout
   io.write(string.format("RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f requests=%d errors=%d\n",
      summary.requests / seconds, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
      summary.requests, errors))
end
