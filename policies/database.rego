# No database reachable from the internet: an RDS instance, or a module built on the
# platform's aws-rds module, must not be publicly accessible.
package tfgen.database

rule := "no-public-database"

is_rds_module(body) if contains(body.source, "aws-rds")

deny contains {"rule": rule, "msg": msg} if {
	some path, doc in input.files
	some name, bodies in doc.resource.aws_db_instance
	some body in bodies
	body.publicly_accessible == true
	msg := sprintf("%v: aws_db_instance.%v is publicly accessible", [path, name])
}

deny contains {"rule": rule, "msg": msg} if {
	some path, doc in input.files
	some name, bodies in doc.module
	some body in bodies
	is_rds_module(body)
	body.publicly_accessible == true
	msg := sprintf("%v: module.%v is publicly accessible", [path, name])
}

# A request column may say it outright, whatever the template does with it.
deny contains {"rule": rule, "msg": msg} if {
	input.request.publicly_accessible in {true, 1, "1", "Y", "y", "yes", "true"}
	msg := sprintf("request %v/%v/%v asks for a publicly accessible database", [input.request.cloud_id, input.request.resource_type, input.request.request_id])
}
