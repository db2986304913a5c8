"""Speech in and out (Vosk ASR, TTS, spoken numbers): built by the voice issue; nothing of ours is imported here."""
