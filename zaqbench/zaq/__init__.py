"""The adversarial engine and the trainers built on it.

``engine`` holds ZAQ's loop (generator step, Q steps, stabilisers); ``generator``,
``discrepancy``, ``features``, ``trust_region``, ``bit_rules``, ``diagnostics`` and
``loss_log`` are its parts. ``gdfq`` and ``real_kd`` reuse the loop with another data
source; ``zeroq`` holds the BN-statistics terms shared by ZeroQ, GDFQ and ZAQ's anchors.
"""
