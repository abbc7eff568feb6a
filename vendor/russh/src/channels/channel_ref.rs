use tokio::sync::mpsc::Sender;

use std::sync::Arc;

use super::{ReceiveFlow, WindowSizeRef};
use crate::ChannelMsg;

/// A handle to the [`super::Channel`]'s to be able to transmit messages
/// to it and update it's `window_size`.
#[derive(Debug)]
pub struct ChannelRef {
    pub(super) sender: Sender<ChannelMsg>,
    pub(super) window_size: WindowSizeRef,
    /// Present on client channels: window is returned as the reader consumes.
    pub(crate) flow: Option<Arc<ReceiveFlow>>,
}

impl ChannelRef {
    pub fn new(sender: Sender<ChannelMsg>) -> Self {
        Self {
            sender,
            window_size: WindowSizeRef::new(0),
            flow: None,
        }
    }

    pub(crate) fn with_flow(sender: Sender<ChannelMsg>, flow: Arc<ReceiveFlow>) -> Self {
        Self {
            flow: Some(flow),
            ..Self::new(sender)
        }
    }

    pub(crate) fn sender(&self) -> &Sender<ChannelMsg> {
        &self.sender
    }

    pub(crate) fn window_size(&self) -> &WindowSizeRef {
        &self.window_size
    }
}

impl std::ops::Deref for ChannelRef {
    type Target = Sender<ChannelMsg>;

    fn deref(&self) -> &Self::Target {
        &self.sender
    }
}
