//! Step-up authentication: the challenge a suspicious session gets, completed by tether
//! itself as an OpenID Connect relying party.

pub mod challenge;
pub mod egress;
pub mod oidc;
pub mod return_to;

pub mod table;
pub mod warm_up;
pub mod wire;

pub use challenge::Pending;
pub use table::{BeginError, ChallengeLimits, ChallengeRequest, Challenges, Rate};
