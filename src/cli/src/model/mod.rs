//! The demo's small models, built with tch on the library's BatchNorm layer.
pub mod digits_net;

pub use asymvalley::network::Network;
pub use digits_net::{DigitsNet, DigitsNetConfig};
