"""What an attacker meets: the defended teacher, its query API at an access level, the answers it
gives, the threat model, and what a defense costs the owner's legitimate users."""
