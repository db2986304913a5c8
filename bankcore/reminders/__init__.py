"""The outbound-reminder scheduler: rules, planning, policies, the durable store and its workers."""
