"""The phone line (IVR): a SIP user agent with RTP audio, an Asterisk AudioSocket server, and the call flow."""
