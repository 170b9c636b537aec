//! [`medianode_faulty::Faulty`] as a native plugin, for the tests of how
//! the node handles a native plugin's panics (`fault = "panic"`; the other
//! faults would take the node down, which is what native means).

medianode_sdk::export_native_audio_dsp!(medianode_faulty::Faulty);
