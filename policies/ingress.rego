# No ingress from the whole internet (0.0.0.0/0, ::/0) to admin or database ports,
# neither in the request's firewall rules nor in the rendered security groups.
package tfgen.ingress

rule := "no-world-ingress-to-admin-or-database-ports"

admin_ports := {22, 3389, 5985, 5986}

database_ports := {1433, 1521, 3306, 5432, 6379, 9200, 27017}

sensitive_ports := admin_ports | database_ports

world := {"0.0.0.0/0", "::/0"}

# VARCHAR2 columns hold lists as "a,b" or "[a, b]"; rendered HCL holds real lists.
cidr_list(value) := value if is_array(value)

cidr_list(value) := [trim_space(c) | some c in split(trim(value, "[]"), ",")] if is_string(value)

all_protocols := {"-1", "all"}

covers(r, _) if lower(sprintf("%v", [r.protocol])) in all_protocols

covers(r, port) if {
	to_number(r.from_port) <= port
	port <= to_number(r.to_port)
}

exposed(r) := {p | some p in sensitive_ports; covers(r, p)}

# Messages join computed strings with concat: rego-cpp 1.5.2 sprintf quotes them.
port_text(ports) := concat(", ", [sprintf("%v", [p]) | some p in sort(ports)])

# The request's own rules (v_<cloud>_<type>_requests_sg_ingress), as APEX stores them.
deny contains {"rule": rule, "msg": msg} if {
	some r in input.request.sg_rules
	some cidr in cidr_list(r.cidr_blocks)
	cidr in world
	ports := exposed(r)
	count(ports) > 0
	msg := concat("", ["request rule ", sprintf("%v", [object.get(r, "description", "?")]), " opens port(s) ", port_text(ports), " to ", cidr])
}

# The rendered security groups: every ingress block, however many.
deny contains {"rule": rule, "msg": msg} if {
	some path, doc in input.files
	some name, bodies in doc.resource.aws_security_group
	some body in bodies
	some r in body.ingress
	some cidr in cidr_list(r.cidr_blocks)
	cidr in world
	ports := exposed(r)
	count(ports) > 0
	msg := concat("", [path, ": aws_security_group.", name, " opens port(s) ", port_text(ports), " to ", cidr])
}

deny contains {"rule": rule, "msg": msg} if {
	some path, doc in input.files
	some name, bodies in doc.resource.aws_security_group_rule
	some r in bodies
	r.type == "ingress"
	some cidr in cidr_list(r.cidr_blocks)
	cidr in world
	ports := exposed(r)
	count(ports) > 0
	msg := concat("", [path, ": aws_security_group_rule.", name, " opens port(s) ", port_text(ports), " to ", cidr])
}
