package configs

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
)

// setting is where a field of Config is set: its YAML key path ("limits.publish_rate") and its
// environment variable ("GATEWAY_LIMITS_PUBLISH_RATE"), both from the struct tags.
type setting struct {
	key, env string
}

// settingField is a setting and the index path of its field in Config.
type settingField struct {
	index []int
	typ   reflect.Type
	setting
}

// settingFields are every setting of Config, found once by walkSettings.
var settingFields = sync.OnceValue(func() []settingField {
	var out []settingField
	walkSettings(reflect.TypeOf(Config{}), nil, EnvPrefix, "", func(f reflect.StructField, index []int, s setting) {
		out = append(out, settingField{index: index, typ: f.Type, setting: s})
	})
	return out
})

// walkSettings calls fn for every setting of the struct type t, following the same tags as
// caarlos0/env (env, envPrefix) and the YAML decoder (yaml): a nested struct is a section whose
// yaml key and envPrefix start the keys and variables of its fields (an embedded struct tagged
// yaml:",inline" adds neither). A setting without an env tag
// has no variable (env "").
func walkSettings(t reflect.Type, index []int, envPrefix, yamlPrefix string, fn func(f reflect.StructField, index []int, s setting)) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		y, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if y == "-" || !f.IsExported() {
			continue
		}
		at := append(append([]int(nil), index...), i)
		if f.Type.Kind() == reflect.Struct {
			section := yamlPrefix + y + "."
			if y == "" && opts == "inline" { // an embedded struct whose fields are the enclosing section's
				section = yamlPrefix
			}
			walkSettings(f.Type, at, envPrefix+f.Tag.Get("envPrefix"), section, fn)
			continue
		}
		s := setting{key: yamlPrefix + y}
		if e := f.Tag.Get("env"); e != "" && e != "-" {
			s.env = envPrefix + e
		}
		fn(f, at, s)
	}
}

// settingOf is the setting of field, a pointer to a field of c (&c.Limits.PublishRate). It
// panics when field is not one: a rule that names no setting is a bug of this package, which
// TestValidate's cases reach.
func (c *Config) settingOf(field any) setting {
	p := reflect.ValueOf(field)
	if p.Kind() == reflect.Pointer && !p.IsNil() {
		root := reflect.ValueOf(c).Elem()
		for _, f := range settingFields() {
			v := root.FieldByIndex(f.index)
			if v.Addr().Pointer() == p.Pointer() && f.typ == p.Type().Elem() {
				return f.setting
			}
		}
	}
	panic(fmt.Sprintf("configs: %T is not a pointer to a setting of Config", field))
}

// name is "key (VARIABLE)", for reasons that name another setting.
func (s setting) name() string {
	return s.key + " (" + s.env + ")"
}

// KeyErrorFrom makes err a *KeyError when its text names a setting by its YAML key, as the broker
// packages' checks do ("kafka.partitions (2000) must be ...", "jetstream: jetstream.replicas ..."),
// so that it names the variable too; the first key named is the one at fault. Other errors are
// returned as they are.
func KeyErrorFrom(err error) error {
	if err == nil {
		return nil
	}
	text := err.Error()
	for _, word := range strings.Fields(text) {
		word = strings.Trim(word, ":,()")
		for _, f := range settingFields() {
			if f.key == word && f.env != "" {
				return &KeyError{Key: f.key, Env: f.env, Reason: strings.TrimPrefix(text, f.key+": ")}
			}
		}
	}
	return err
}
