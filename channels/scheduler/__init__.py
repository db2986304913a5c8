"""The outbound-reminder scheduler's workers: claim due reminders from the shared database and send them."""
