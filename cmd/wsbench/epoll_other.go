//go:build !linux

package main

import "errors"

type epollReaders struct{}

const epollAvailable = false

func newEpollReaders(*bench, int) (*epollReaders, error) {
	return nil, errors.New("epoll exists only on Linux")
}

func (*epollReaders) add(*conn) error { return errors.New("no epoll") }
func (*epollReaders) stop()           {}

func closeFD(int)               {}
func writeFD(int, []byte) error { return errors.New("no epoll") }
