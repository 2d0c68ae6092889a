// header-only
