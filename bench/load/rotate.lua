-- wrk script of `python -m bench.load`: POST request bodies rotated over a file (one JSON body per line),
-- count response statuses and the `version` field of the answers, stop after a request budget, and print
-- one JSON line of everything (latency percentiles in microseconds) for the benchmark to parse.
--
-- wrk -t T -c C -d D -s rotate.lua URL -- BODIES PATH MAX_PER_THREAD START T
--   BODIES          file of request bodies, one JSON document per line
--   PATH            request path (e.g. /v1/similarity)
--   MAX_PER_THREAD  answers after which each thread stops (0: no budget, time only)
--   START           body to start at (0-based): thread i of T sends bodies START + i, START + i + T, ..., so a run sends
--                   about one contiguous stretch of the file and the next run can start where it ended (no body is
--                   sent twice before the file is used up: a server's cache sees no repeats it would not see in use)
--   T               wrk's thread count again (a thread's init runs before the next thread is set up)

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } qdup_timespec;
int clock_gettime(int clk_id, qdup_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local now_ts = ffi.new("qdup_timespec")

-- Seconds on the monotonic clock, comparable across threads: wrk keeps running for its whole -d after
-- every thread stopped on its budget, so the benchmark's rates use the window these times bound.
local function now()
   ffi.C.clock_gettime(CLOCK_MONOTONIC, now_ts)
   return tonumber(now_ts.tv_sec) + tonumber(now_ts.tv_nsec) * 1e-9
end

local threads = {}

function setup(thread)
   thread:set("thread_index", #threads)
   table.insert(threads, thread)
end

function init(args)
   local path, route = args[1], args[2]
   limit = tonumber(args[3] or "0")
   bodies = {}
   for line in io.lines(path) do
      if #line > 0 then bodies[#bodies + 1] = line end
   end
   if #bodies == 0 then error("no request bodies in " .. path) end
   route_path = route
   -- Thread i sends START + i, START + i + T, ...: together the threads send one stretch of the file.
   step = tonumber(args[5] or "1")
   position = tonumber(args[4] or "0") + (thread_index or 0)
   -- wrk calls the first thread's request() once right after init, to check the request it builds: not sent.
   verifying = (thread_index or 0) == 0
   sent, answered = 0, 0
   first_sent_s, last_answer_s = 0, 0
   statuses, versions, switches = {}, {}, 0
   last_version = nil
   wrk.method = "POST"
   wrk.headers["Content-Type"] = "application/json"
end

function request()
   if verifying then
      verifying = false
      return wrk.format("POST", route_path, nil, bodies[position % #bodies + 1])
   end
   local next_body = position % #bodies + 1
   position = position + step
   sent = sent + 1
   if first_sent_s == 0 then first_sent_s = now() end
   return wrk.format("POST", route_path, nil, bodies[next_body])
end

function response(status, headers, body)
   answered = answered + 1
   last_answer_s = now()
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
   local version = body and string.match(body, '"version"%s*:%s*"([^"]+)"')
   if version then
      versions[version] = (versions[version] or 0) + 1
      if last_version and version ~= last_version then switches = switches + 1 end
      last_version = version
   end
   if limit > 0 and answered >= limit then wrk.thread:stop() end
end

local function encode(value)
   local kind = type(value)
   if kind == "table" then
      local parts = {}
      if #value > 0 then
         for _, v in ipairs(value) do parts[#parts + 1] = encode(v) end
         return "[" .. table.concat(parts, ",") .. "]"
      end
      for k, v in pairs(value) do
         parts[#parts + 1] = string.format("%q:%s", tostring(k), encode(v))
      end
      return "{" .. table.concat(parts, ",") .. "}"
   elseif kind == "string" then
      return string.format("%q", value)
   elseif kind == "nil" or (kind == "number" and (value ~= value or value == math.huge or value == -math.huge)) then
      return "null"
   end
   return tostring(value)
end

function done(summary, latency, requests)
   local per_thread = {}
   for i, thread in ipairs(threads) do
      per_thread[i] = {
         statuses = thread:get("statuses"),
         versions = thread:get("versions"),
         version_changes = thread:get("switches"),
         answered = thread:get("answered"),
         sent = thread:get("sent"),
         first_sent_s = thread:get("first_sent_s"),
         last_answer_s = thread:get("last_answer_s"),
         stopped_on_budget = thread:get("limit") > 0 and thread:get("answered") >= thread:get("limit"),
      }
   end
   local percentiles = {}
   for _, p in ipairs({50, 90, 99, 99.9}) do
      percentiles[tostring(p)] = latency:percentile(p)
   end
   local out = {
      duration_us = summary.duration,
      requests = summary.requests,
      bytes = summary.bytes,
      errors = summary.errors,
      latency_us = {min = latency.min, max = latency.max, mean = latency.mean, stdev = latency.stdev,
                    percentiles = percentiles},
      threads = per_thread,
   }
   io.write("QDUP_WRK_JSON " .. encode(out) .. "\n")
end
