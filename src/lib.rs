//! # certshift
//!
//! Does a service really enforce client certificates, and does it survive
//! certificate rotation under load? certshift answers both with real TLS
//! handshakes over real sockets.
//!
//! One proxied connection, in the order things happen:
//!
//! ```text
//!  client ──TCP/TLS/mTLS──▶ [proxy: accept] ──▶ [plan picks the credential] ──▶ [net: connect + handshake,
//!                               │                      ▲                          presenting it] ──▶ service
//!                         server creds           creds: the live identity             │
//!                          (rotating)            and the PKI's bad variants           ▼
//!                                                                      [relay: first upstream bytes decide
//!                                                                       the Outcome] ──▶ metrics (histograms,
//!                                                                                         outcomes, timeline)
//! ```
//!
//! With `--swap request` the proxy speaks HTTP downstream instead of relaying
//! bytes: each request is one experiment (the plan picks per request) and goes
//! upstream over a pooled connection that presented exactly that credential
//! (`proxy::pool`); its response, or the proxy's `502`, carries the
//! `x-certshift-*` headers.
//!
//! And around it:
//!
//! ```text
//!  pki ──writes──▶ test PKI on disk (manifest.toml: every credential and its expected verdict,
//!                   the mutated certificates of the identity and the rule each breaks)
//!  x509, spiffe ──facts read once from a certificate; the workload identity
//!  creds ──loads, checks (usable now: validity, chain, key), publishes (Live<T>); reload on
//!         file change (directories and parents, re-watched when replaced) / poll / SIGHUP
//!  tls ──rustls configs from checked material; the Outcome and Verdict of every attempt
//!  net ──connect + handshake under per-phase deadlines, the HTTP/1.1 exchange (hyper's, and the
//!        load's minimal keep-alive client), HTTP/1 message framing; accept helpers
//!  probe ──one client experiment: connect, handshake with a chosen cert, request
//!  serve ──the reference mTLS service (modes, policy) experiments are judged against;
//!         `--admin`: the same admin server as the proxy's (/stats, /metrics, /healthz)
//!  load  ──open-loop operations (handshake/request/keepalive) at intended times;
//!          per-recorder histograms, an operation log, merged at the end ──▶ report
//!  report ──the shape users keep: JSON contract, tables, HdrHistogram logs, SVG; `report merge|show`
//!  rotation_test ──load while client/server/CA-bundle credentials rotate; the downtime
//!  audit ──one experiment per check against a target (valid identity first, then every bad
//!          credential, plaintext, resumption after expiry, clock skew, every mutated
//!          certificate) ──▶ PASS/FAIL, JUnit; `--fuzz N`: random DER mutations of the
//!          identity instead, flagging close-without-alert, reset, timeout, crash;
//!          `--differential`: the same certificates to several targets, the rows they decide differently
//!  bench ──serve and a closed-loop client on their own threads per cell; CPU per side,
//!          latency, bytes, beside the cost of the cell's crypto alone ──▶ report::bench
//!  demo  ──PKI + serve + proxy (mostly valid, every bad variant) + load + rotations
//! ```
//!
//! ## Layers
//!
//! A module uses only modules of a strictly lower layer (a larger number):
//! never sideways, never up. `tests/it/layers.rs` reads this table and every
//! `crate::` path in `src/`, and fails on an edge against it.
//!
//! | layer | module | owns |
//! |---|---|---|
//! | 1 commands | [`cli`] | clap definitions, dispatch, exit codes (0 ok, 1 failure found, 2 usage/config) |
//! | 2 runs | [`audit`] | does an endpoint enforce mTLS: the check registry, experiments, verdicts; table, JSON, JUnit; `--fuzz`, `--differential` |
//! | 2 runs | [`bench`] | what a handshake costs on each side per key type, TLS version, resumption, key exchange, client auth and chain depth, beside its cryptography alone; `--target` for the client side of another service |
//! | 2 runs | [`demo`] | the README's main job |
//! | 2 runs | [`rotation_test`] | rotations under load on the embedded default or a target; windows and downtime |
//! | 3 control | [`admin`] | the admin HTTP API of the proxy (stats, Prometheus metrics, timeline, rotate, the plan) and of `serve` (stats, metrics): one server, access guard, listener and reload sections for both |
//! | 4 engines | [`proxy`] | the intercepting proxy: listener, connector, relay and its HTTP/1 response counting (`--swap connection`), per-request HTTP and upstream pools (`--swap request`), rotation sources, `--on-rotate`, the live plan (`PUT /plan`, `--plan-schedule`) |
//! | 4 engines | [`serve`] | the reference mTLS HTTP/1.1 service with an Istio-style policy; its counters, reload and revocation status for `serve --admin` |
//! | 4 engines | [`load`] | the open-loop load generator: schedule, operations, recorders, the run's report |
//! | 5 outputs | [`report`] | load and rotation reports: JSON contract, tables, output files, SVG plots, merge/show |
//! | 6 measurements | [`metrics`] | per-connection reports aggregated off the hot path: HdrHistograms, counters, timeline, exporters |
//! | 7 experiments | [`plan`] | which credential each proxied connection presents, and its expected verdict |
//! | 7 experiments | [`probe`] | one connection experiment with per-phase timeouts |
//! | 8 connections | [`net`] | connect + handshake + HTTP exchange under deadlines (hyper's, and a minimal keep-alive HTTP/1.1 client), every failure an `Outcome`; HTTP/1 message framing in a byte stream; addresses; the shutdown signal |
//! | 8 connections | [`accept`] | the accept loop shared by servers, on worker threads (one runtime and one SO_REUSEPORT socket each, `--workers`): listen backlog, connection and handshake caps that shed (longest idle, oldest handshake) instead of refusing, handshake and header deadlines per connection slot, gauges and close counters, descriptor exhaustion, drain then close |
//! | 9 tls | [`tls`] | rustls config builders, SPIFFE and accept-anything verifiers, [`tls::Outcome`] |
//! | 10 credentials | [`creds`] | loading and checking credential files; live values and reload triggers |
//! | 11 material | [`pki`] | test PKI generation (rcgen) under its own CA or the user's, the variant and mutation catalogues, `manifest.toml` and the directory layout, inspection |
//! | 12 facts | [`x509`] | certificate facts parsed once from DER (serial, fingerprint, validity, SANs, key, CA flag, usages), PEM labels |
//! | 13 identity | [`spiffe`] | the SPIFFE ID: parsing by the standard's rules, trust domain, Istio principal |
#![forbid(unsafe_code)]

pub mod accept;
pub mod admin;
pub mod audit;
pub mod bench;
pub mod cli;
pub mod creds;
pub mod demo;
pub mod load;
pub mod metrics;
pub mod net;
pub mod pki;
pub mod plan;
pub mod probe;
pub mod proxy;
pub mod report;
pub mod rotation_test;
pub mod serve;
pub mod spiffe;
pub mod tls;
pub mod x509;
