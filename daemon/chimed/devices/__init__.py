"""Audio devices: virtual and PortAudio inputs (aiortc tracks, audio_inputs), outputs (remote
track consumers, audio_outputs), device ids (ids), opening them (opening) and the device list
with hot-plug (listing; probe runs the enumeration in a helper process)."""
