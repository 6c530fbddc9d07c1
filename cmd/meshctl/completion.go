package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/alecthomas/kong"
)

type completionCmd struct {
	Shell string `arg:"" enum:"bash,zsh" help:"bash or zsh."`
}

// Run prints a completion script generated from meshctl's own command
// tree, so it never lags behind the commands.
func (c *completionCmd) Run(k *kong.Context) error {
	words := map[string][]string{}
	var walk func(n *kong.Node, path string)
	walk = func(n *kong.Node, path string) {
		var w []string
		for _, ch := range n.Children {
			if !ch.Hidden {
				w = append(w, ch.Name)
				walk(ch, strings.TrimSpace(path+" "+ch.Name))
			}
		}
		for _, f := range n.Flags {
			if !f.Hidden {
				w = append(w, "--"+f.Name)
			}
		}
		sort.Strings(w)
		words[path] = w
	}
	walk(k.Model.Node, "")
	var cases strings.Builder
	paths := make([]string, 0, len(words))
	for p := range words {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		fmt.Fprintf(&cases, "    %q) words=%q ;;\n", p, strings.Join(words[p], " "))
	}
	script := fmt.Sprintf(`_meshctl() {
  local cur path="" w
  cur="${COMP_WORDS[COMP_CWORD]}"
  for w in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do
    case "$w" in -*) ;; *) path="${path:+$path }$w" ;; esac
  done
  local words=""
  case "$path" in
%s  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -F _meshctl meshctl
`, cases.String())
	if c.Shell == "zsh" {
		script = "autoload -U +X bashcompinit && bashcompinit\n" + script
	}
	fmt.Print(script)
	return nil
}
