/**
 * The floor: keygate's own gRPC layer (server/grpc/grpc-server.ts: node:http2, framing,
 * health) answering every Check with one fixed allow shaped like keygate's (key swap,
 * client id, dynamic metadata), encoded once. Whatever this costs, keygate pays for
 * receiving and answering a Check; the difference is its decision. The request is not
 * decoded at all.
 * Prints {"msg":"floor listening","port":N} when ready; SIGTERM stops it.
 */
import { encodeCheckResponse } from "../server/grpc/check-response-wire.js";
import { startGrpcServer } from "../server/grpc/grpc-server.js";
import { CLIENT_ID_HEADER, UPSTREAM_HEADER } from "./workload.js";

const MAX_RECEIVE_BYTES = 8 * 1024 * 1024;
const OVERWRITE = "OVERWRITE_IF_EXISTS_OR_ADD" as const;

const FIXED_ALLOW = encodeCheckResponse({
  status: { code: 0 },
  ok_response: {
    headers: [
      {
        header: { key: UPSTREAM_HEADER, value: `sk-ant-api03-${"f".repeat(80)}` },
        append_action: OVERWRITE,
      },
      { header: { key: CLIENT_ID_HEADER, value: "client-000000" }, append_action: OVERWRITE },
    ],
    headers_to_remove: ["authorization"],
  },
  dynamic_metadata: {
    fields: {
      client_id: { stringValue: "client-000000" },
      auth_mode: { stringValue: "known" },
      keystore_generation: { numberValue: 1 },
    },
  },
});

const server = await startGrpcServer({
  address: { kind: "tcp", host: "127.0.0.1", port: 0 },
  maxReceiveBytes: MAX_RECEIVE_BYTES,
  check: () => FIXED_ALLOW,
});
server.setServing(true);
process.stdout.write(`${JSON.stringify({ msg: "floor listening", port: server.port })}\n`);
process.once("SIGTERM", () => {
  void server.drain(2000).then(() => process.exit(0));
});
