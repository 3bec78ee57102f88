"""Who is calling: Better Auth's tokens, their keys, and the owner rule."""
