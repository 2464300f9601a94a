//! The one integration-test binary (each extra binary would relink the AWS SDK). Modules by
//! topic; each says in its first line what belongs there.

mod accounts;
mod architecture;
mod cli;
mod demo;
mod evidence;
mod guard;
mod hostile;
mod idempotency;
mod isolate;
mod lambda;
mod layouts;
mod modes;
mod notices;
mod preflight;
mod release;
mod scheduler;
mod sessions;
mod shared_network;
mod support;
mod template;
