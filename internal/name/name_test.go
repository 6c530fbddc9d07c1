package name

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for s, want := range map[string]bool{
		"h1": true, "i-0abc123": true, "vpc-1.a_b": true, strings.Repeat("a", 63): true,
		"": false, strings.Repeat("a", 64): false, "-h1": false, ".h1": false,
		"h 1": false, "h/1": false, "é": false, "h1\n": false,
	} {
		if got := Valid(s); got != want {
			t.Errorf("Valid(%q) = %v, want %v", s, got, want)
		}
	}
}
