//! placeholder
#[derive(Debug, Clone)] pub struct SinkConfig; #[derive(Debug, Clone)] pub struct SinkHealth; #[derive(Debug, Clone)] pub enum SinkKind {}
