// Runs TS013 codec calls for pytest: node ts013_runner.js <codec.js> < calls.json > results.json
//
// calls.json is a list of {"type": "uplink" | "downlink-encode" | "downlink-decode", "input": {...}}.
// The codec is loaded with vm.runInNewContext into an empty context: no require, no module
// objects, nothing but the ECMAScript built-ins, as a network server's sandbox would offer.
// recvTime is added to uplink inputs as TS013 requires. Exceptions escaping the codec are
// reported as {"thrown": message}, which the tests treat as a failure (codecs must not throw).
"use strict";

var fs = require("fs");
var vm = require("vm");

var source = fs.readFileSync(process.argv[2], "utf8");
var context = vm.createContext({});
vm.runInContext(source, context, { filename: process.argv[2] });

var calls = JSON.parse(fs.readFileSync(0, "utf8"));
var fn = {
  "uplink": "decodeUplink",
  "downlink-encode": "encodeDownlink",
  "downlink-decode": "decodeDownlink"
};
var results = calls.map(function (call) {
  var input = JSON.parse(JSON.stringify(call.input));
  if (call.type === "uplink") {
    input.recvTime = new Date(0);
  }
  try {
    // copy the input into the codec's realm, and the result back out, through JSON
    context.__input = JSON.stringify(input);
    if (call.type === "uplink") {
      vm.runInContext("__input = JSON.parse(__input); __input.recvTime = new Date(0);", context);
    } else {
      vm.runInContext("__input = JSON.parse(__input);", context);
    }
    return JSON.parse(vm.runInContext("JSON.stringify(" + fn[call.type] + "(__input))", context));
  } catch (e) {
    return { thrown: String(e && e.stack || e) };
  }
});
process.stdout.write(JSON.stringify(results));
