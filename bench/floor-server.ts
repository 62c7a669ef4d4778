/**
 * The floor: a bare grpc-js Authorization server that decodes the same Envoy protos as
 * keygate (same loader options, same receive limit) and answers every Check with one
 * fixed allow shaped like keygate's (key swap, client id, dynamic metadata). Whatever
 * this costs, any Node ext_authz server pays; keygate is measured against it.
 * Prints {"msg":"floor listening","port":N} when ready; SIGTERM stops it.
 */
import { Server, ServerCredentials, type ServerUnaryCall, type sendUnaryData } from "@grpc/grpc-js";
import { authorizationService } from "../test/helpers/envoy-protos.js";
import { CLIENT_ID_HEADER, UPSTREAM_HEADER } from "./workload.js";

const MAX_RECEIVE_BYTES = 8 * 1024 * 1024;
const OVERWRITE = "OVERWRITE_IF_EXISTS_OR_ADD";

const FIXED_ALLOW = Object.freeze({
  status: { code: 0 },
  ok_response: {
    headers: [
      {
        header: { key: UPSTREAM_HEADER, value: `sk-ant-api03-${"f".repeat(80)}` },
        append_action: OVERWRITE,
      },
      { header: { key: CLIENT_ID_HEADER, value: "client-000000" }, append_action: OVERWRITE },
    ],
    headers_to_remove: [],
  },
  dynamic_metadata: {
    fields: {
      client_id: { stringValue: "client-000000" },
      auth_mode: { stringValue: "known" },
      keystore_generation: { numberValue: 1 },
    },
  },
});

const server = new Server({
  "grpc.max_receive_message_length": MAX_RECEIVE_BYTES,
  "grpc.max_send_message_length": 4 * 1024 * 1024,
});
server.addService(authorizationService(), {
  Check(_call: ServerUnaryCall<unknown, unknown>, callback: sendUnaryData<unknown>) {
    callback(null, FIXED_ALLOW);
  },
});
server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (error, port) => {
  if (error) {
    process.stderr.write(`floor-server: ${error.message}\n`);
    process.exit(1);
  }
  process.stdout.write(`${JSON.stringify({ msg: "floor listening", port })}\n`);
});
process.once("SIGTERM", () => {
  server.tryShutdown(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
});
