//! The demo's small models, built with tch on the library's BatchNorm layer: the study's CNN
//! ([`DigitsCnn`]) and the MLP ([`DigitsNet`]) that the detector's benchmark probes.
pub mod digits_cnn;
pub mod digits_net;

pub use asymvalley::network::Network;
pub use digits_cnn::{DigitsCnn, DigitsCnnConfig};
pub use digits_net::{DigitsNet, DigitsNetConfig};
