"""The commands, by audience: stack (the local stack, demo), submit (validate, submit),
operate (status, inbox, dead letters), offline (detect, report: no AWS)."""
