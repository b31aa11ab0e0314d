"""Moving bytes between two legs: the user-mode relay, its legs, data filters, the fast path."""
