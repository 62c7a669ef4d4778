/** The usage text, printed on `keygate help` and with every usage error (exit 2). */
export const USAGE = `usage: keygate <command> [options]

  serve                                  run the server (what npm start does)

  keystore init                          write a starter keystore.yaml (mode 0600); prints the demo token
  keystore add <id> [--name N] [--routes /a,/b] [--models m1,m2] [--expires T] [--internal]
               [--upstream-key-stdin [--kid K] | --upstream-key-env VAR] [--budget B]
                                         new client; prints only its new token
  keystore rotate <id> [--grace 24h] [--expires T]
                                         new token printed; old tokens expire after the grace
                                         (default 0: removed at once)
  keystore revoke <id> [--token SHA256-PREFIX]
                                         remove all the client's tokens, or the one with that digest prefix
  keystore disable <id> | enable <id> | remove <id>
  keystore set-upstream-key (<id> | --defaults) [--kid K]
                                         stdin upstream key -> enc:v1:... under the newest master key
  keystore set-budget <id> (B | --clear)  set or remove the client's token budget
  keystore list [--json]                 clients, token counts and expiries, key kinds, last use,
                                         tokens used today and this month, budgets; no secrets
  keystore check                         validate; prints file:line:column: message per problem
  keystore reencrypt --to KID            re-encrypt every enc: value under master key KID

  usage [--since T] [--client ID] [--json]
                                         tokens spent per client and model (from KEYGATE_DB);
                                         T: a date (2026-12-01), an RFC 3339 time or a duration back (7d);
                                         default: since the 1st of this month (UTC)

  hash                                   stdin token -> lowercase hex SHA-256
  keygen [--kid k1]                      print a new master key as kid:base64
  encrypt (--client <id> | --defaults) [--kid K]
                                         stdin secret -> enc:v1:... bound to that client id

  Keystore commands take --keystore FILE (default: $KEYGATE_KEYSTORE, else ./keystore.yaml).
  B is a token budget per UTC day or month: TOKENS/day or TOKENS/month (100000/day).
  T is an RFC 3339 time (2026-12-01T00:00:00Z) or a duration from now (90d); durations: 30m, 24h, 7d.
  Master keys come from KEYGATE_MASTER_KEY or KEYGATE_MASTER_KEY_FILE (kid:base64[,kid:base64]);
  the last one listed is the newest.
`;
