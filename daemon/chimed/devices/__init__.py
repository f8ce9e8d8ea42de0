"""Audio devices: virtual and PortAudio inputs (aiortc tracks, audio_inputs), outputs (remote
track consumers, audio_outputs), and the registry of device ids, listing and hot-plug
(registry; probe runs the enumeration in a helper process)."""
