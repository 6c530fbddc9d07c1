// Package name owns the one rule for the names meshd accepts for instance
// ids, networks and groups: they end up in ZooKeeper paths, ipset names,
// DNS labels and certificate SANs, so the registry, the trust checks and
// the CA all judge them by this rule alone.
package name

// Valid reports whether s is 1 to 63 ASCII letters, digits, '.', '_' or
// '-', starting with a letter or digit.
func Valid(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || (i > 0 && (c == '.' || c == '_' || c == '-'))
		if !ok {
			return false
		}
	}
	return true
}
