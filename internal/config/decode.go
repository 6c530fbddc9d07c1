package config

import (
	"encoding"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"

	"gopkg.in/yaml.v3"
)

// Errors lists every problem found in a configuration file.
type Errors []error

func (e Errors) Error() string {
	s := make([]string, len(e))
	for i, err := range e {
		s[i] = err.Error()
	}
	return strings.Join(s, "\n")
}

// Load reads, decodes and validates the file at path.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return cfg, fmt.Errorf("config %s:\n%w", path, err)
	}
	return cfg, nil
}

// Parse decodes data over the defaults and validates the result. On error
// it returns Errors naming each bad key.
func Parse(data []byte) (Config, error) {
	cfg := Default()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return cfg, Errors{fmt.Errorf("not valid YAML: %w", err)}
	}
	var errs Errors
	if len(root.Content) > 0 {
		decodeInto(root.Content[0], reflect.ValueOf(&cfg).Elem(), "", &errs)
	}
	cfg.dnsDefaults()
	if len(root.Content) > 0 {
		cfg.peersDefaults(root.Content[0])
	}
	if len(errs) == 0 {
		errs = append(errs, cfg.Validate()...)
	}
	if len(errs) > 0 {
		return cfg, errs
	}
	return cfg, nil
}

// decodeInto decodes node into v, recursing through structs so that an
// unknown or badly typed key is reported with its full dotted path.
func decodeInto(node *yaml.Node, v reflect.Value, path string, errs *Errors) {
	if v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct && node.Kind == yaml.SequenceNode {
		// A list of mappings: each decoded key by key, so a typo inside
		// one (firewall.underlay.allow[0].port) is named too.
		v.Set(reflect.MakeSlice(v.Type(), len(node.Content), len(node.Content)))
		for i, el := range node.Content {
			decodeInto(el, v.Index(i), fmt.Sprintf("%s[%d]", path, i), errs)
		}
		return
	}
	if _, leaf := v.Addr().Interface().(encoding.TextUnmarshaler); leaf || v.Kind() != reflect.Struct {
		if err := node.Decode(v.Addr().Interface()); err != nil {
			*errs = append(*errs, fmt.Errorf("%s: bad value %q (line %d): %s", path, scalarText(node), node.Line, typeHint(v.Type(), err)))
		}
		return
	}
	if node.Kind != yaml.MappingNode {
		if node.Tag == "!!null" {
			return
		}
		*errs = append(*errs, fmt.Errorf("%s: want a mapping of keys (line %d)", orRoot(path), node.Line))
		return
	}
	fields := map[string]int{}
	for i := 0; i < v.NumField(); i++ {
		tag := strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0]
		fields[tag] = i
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(node.Content); i += 2 {
		key, val := node.Content[i].Value, node.Content[i+1]
		full := key
		if path != "" {
			full = path + "." + key
		}
		idx, ok := fields[key]
		if !ok {
			*errs = append(*errs, fmt.Errorf("%s: unknown key (line %d)", full, node.Content[i].Line))
			continue
		}
		if seen[key] {
			*errs = append(*errs, fmt.Errorf("%s: key given twice (line %d)", full, node.Content[i].Line))
			continue
		}
		seen[key] = true
		decodeInto(val, v.Field(idx), full, errs)
	}
}

func orRoot(path string) string {
	if path == "" {
		return "config"
	}
	return path
}

func scalarText(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return n.Value
	}
	out, _ := yaml.Marshal(n)
	return strings.TrimSpace(string(out))
}

// typeHint turns yaml's type error into words an operator can act on.
func typeHint(t reflect.Type, err error) string {
	switch t.String() {
	case "time.Duration":
		return "want a Go duration such as 10s or 1m30s"
	case "netip.Addr":
		return "want an address such as 198.51.100.7 (IPv6 keys: 2001:db8::7)"
	case "netip.Prefix":
		return "want a CIDR such as 100.100.0.0/16"
	case "int":
		return "want a whole number"
	case "bool":
		return "want true or false"
	case "string":
		return "want a string"
	case "[]string":
		return "want a list of strings"
	case "[][]string":
		return "want a list of pairs such as [vpc, dc]"
	case "[]netip.Prefix":
		return "want a list of CIDRs such as [192.0.2.0/24]"
	}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		return te.Errors[0]
	}
	return err.Error()
}
