package main

import "errors"

type runCmd struct {
	Config string `short:"c" default:"/etc/meshd/meshd.yaml" type:"path" help:"Config file."`
}

func (r *runCmd) Run() error {
	return errors.New("run: not built yet")
}
