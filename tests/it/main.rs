//! The one integration-test binary (each extra binary would relink the AWS SDK).

mod cli;
mod containment;
mod demo;
mod lambda;
mod support;
mod template;
